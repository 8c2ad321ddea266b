"""Paper tables: scattering features, releases before training, accounting
as the papers did it, and a quick run of every row."""

import importlib
import json
import os
import subprocess
import sys

import dp_accounting
import numpy as np
import pytest

import run_configs
from jaxdp import accounting
from jaxdp.train import ledger
from jaxdp.studies import paper_tables
from jaxdp import private_releases
from jaxdp.studies import reproduce
from jaxdp.data import scattering

PAPERS = reproduce.PAPERS
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _paper(name):
  return importlib.import_module(f'configs.{name}')


# --- Scattering ------------------------------------------------------------

def test_scattering_shapes_and_what_a_constant_image_gives():
  psi, phi = scattering.filter_bank((36, 36), 2, 8)
  np.testing.assert_allclose(np.abs(psi[..., 0, 0]), 0, atol=1e-6)  # Mean 0.
  np.testing.assert_allclose(phi[0, 0], 1, atol=1e-6)  # Low-pass keeps mean.
  assert scattering.num_channels(2, 8) == 81
  out = scattering.scattering(np.full((2, 28, 28, 1), 0.7, np.float32))
  assert out.shape == (2, 7, 7, 81)
  np.testing.assert_allclose(out[..., 0], 0.7, atol=1e-5)
  np.testing.assert_allclose(out[..., 1:], 0, atol=1e-5)
  colour = scattering.scattering(np.zeros((1, 32, 32, 3), np.float32))
  assert colour.shape == (1, 8, 8, 243)


def test_scattering_equals_direct_convolutions():
  """Order 1 and 2 from explicit circular convolutions in NumPy."""
  rng = np.random.default_rng(0)
  image = rng.random((16, 16)).astype(np.float32)
  out = np.asarray(scattering.scattering(image[None, ..., None]))[0]
  padded = np.pad(image, 4, mode='reflect').astype(np.float64)
  psi_hat, phi_hat = scattering.filter_bank(padded.shape, 2, 8)
  spatial = lambda f_hat: np.fft.ifft2(f_hat.astype(np.complex128))

  def conv(x, f_hat):  # y[i, j] = Σ_ab k[a, b] x[i − a, j − b], periodic.
    kernel = spatial(f_hat)
    out = np.zeros(x.shape, np.complex128)
    for a in range(x.shape[0]):
      for b in range(x.shape[1]):
        out += kernel[a, b] * np.roll(x, (a, b), axis=(0, 1))
    return out

  def low(x):
    return conv(x, phi_hat).real[::4, ::4][1:-1, 1:-1]

  np.testing.assert_allclose(out[..., 0], low(padded), atol=1e-5)
  u = np.abs(conv(padded, psi_hat[0, 3]))
  np.testing.assert_allclose(out[..., 1 + 3], low(u), atol=1e-5)
  v = np.abs(conv(u, psi_hat[1, 5]))
  # Order 2 channels follow order 1's 16, by (j1=0, l1, j2=1, l2).
  np.testing.assert_allclose(out[..., 17 + 3 * 8 + 5], low(v), atol=1e-5)


# --- Releases before training ----------------------------------------------

def test_private_pca_finds_the_top_components_and_is_replayed_by_its_seed():
  rng = np.random.default_rng(1)
  images = rng.normal(size=(500, 6)) * np.array([5, 4, 1, 0.5, 0.2, 0.1])
  exact = private_releases.private_pca(images, 2, 1e-9,
                                       np.random.default_rng(0))
  unit = images / np.linalg.norm(images, axis=1, keepdims=True)
  top = np.linalg.eigh(unit.T @ unit)[1][:, ::-1][:, :2]
  # Same subspace: the projections onto each agree.
  np.testing.assert_allclose(np.abs(exact.T @ top), np.eye(2), atol=1e-6)
  first = private_releases.private_pca(images, 2, 7.0, np.random.default_rng(3))
  again = private_releases.private_pca(images, 2, 7.0, np.random.default_rng(3))
  other = private_releases.private_pca(images, 2, 7.0, np.random.default_rng(4))
  np.testing.assert_array_equal(first, again)
  assert not np.allclose(first, other)


def test_released_channel_statistics_are_exact_without_noise_and_bounded():
  rng = np.random.default_rng(2)
  images = rng.normal(1.0, 2.0, size=(400, 3, 3, 4))
  mean, var = private_releases.private_channel_stats(
      images, clip=1e6, sigma=0.0, rng=np.random.default_rng(0))
  np.testing.assert_allclose(mean, images.mean(axis=(0, 1, 2)), rtol=1e-9)
  np.testing.assert_allclose(var, images.var(axis=(0, 1, 2)), rtol=1e-9)
  # With clipping, one example moves the noiseless released mean by at most
  # τ / N, whatever its values: the sensitivity the noise is scaled to.
  tau = 0.5
  changed = images.copy()
  changed[0] = 1e6
  stat = lambda x: private_releases.private_channel_stats(
      x, tau, 0.0, np.random.default_rng(0))[0]
  assert np.linalg.norm(stat(changed) - stat(images)) <= 2 * tau / 400 + 1e-12


@pytest.mark.parametrize('name', ['rdp_classic', 'pld'])
def test_releases_are_composed_into_every_epsilon(name):
  relation = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
  step = dp_accounting.PoissonSampledDpEvent(
      0.01, dp_accounting.GaussianDpEvent(2.0))
  setup = dp_accounting.GaussianDpEvent(7.0)
  eps = accounting.epsilon_after(name, relation, step, 1e-5, setup)
  assert eps(0) == pytest.approx(
      accounting.epsilon(name, relation, setup, 1e-5), rel=1e-9)
  assert eps(0) > 0
  whole = dp_accounting.ComposedDpEvent(
      [setup, dp_accounting.SelfComposedDpEvent(step, 300)])
  assert eps(300) == pytest.approx(
      accounting.epsilon(name, relation, whole, 1e-5), rel=1e-9)
  assert eps(300) > accounting.epsilon_after(name, relation, step, 1e-5)(300)
  # Before step 1 only the release counts, even for a step whose RDP is
  # infinite at some orders (0 × ∞ must not turn into 0).
  harsh = dp_accounting.PoissonSampledDpEvent(
      0.5, dp_accounting.GaussianDpEvent(0.3))
  assert accounting.epsilon_after(name, relation, harsh, 1e-5, setup)(0) == (
      pytest.approx(accounting.epsilon(name, relation, setup, 1e-5), rel=1e-9))


# --- Accounting as the papers did it ---------------------------------------

def test_tramer_boneh_settings_give_their_epsilon_under_their_accountant():
  rows = _paper('tramer_boneh2021').ROWS
  for name in ('mnist_cnn', 'fashion_mnist_cnn', 'cifar10_cnn'):
    row = rows[name]
    eps = paper_tables.paper_epsilon(row, row.noise_multiplier, row.steps)
    assert eps == pytest.approx(3.0, abs=0.01), name
  # A derived step count is the last one within ε = 3 (release included).
  row = rows['mnist_scatter_linear']
  steps = paper_tables.paper_accounting(row)['steps']
  assert paper_tables.paper_epsilon(row, 3.04, steps) <= 3.0
  assert paper_tables.paper_epsilon(row, 3.04, steps + 1) > 3.0
  assert steps == (60000 // 4096) * 40 + 1  # Their 40 epochs.


def test_de_et_al_released_config_gives_epsilon_one():
  row = _paper('de2022').ROWS['wrn16_4_eps1']
  eps = paper_tables.paper_epsilon(row, 10.0, 875)
  assert 0.98 < eps <= 1.0


@pytest.mark.parametrize('paper', PAPERS)
def test_every_row_config_meets_the_papers_epsilon(paper):
  module = _paper(paper)
  table = reproduce.accounting_table(module, list(module.ROWS))
  assert [t['row'] for t in table] == list(module.ROWS)
  for entry in table:
    ours, row = entry['ours'], module.ROWS[entry['row']]
    recomputed = entry['paper_accounting']['epsilon']
    if recomputed is None:  # No σ or steps from the paper: ours meets its ε.
      assert ours['epsilon'] <= row.epsilon + 1e-9
    else:  # jaxdp's accountant agrees with the paper's on the same mechanism.
      assert ours['epsilon'] <= max(row.epsilon, recomputed) + 1e-6
      assert ours['epsilon'] == pytest.approx(recomputed, abs=0.05)
  text = reproduce.accounting_markdown(table)
  assert text.count('\n|') == len(module.ROWS) + 1


# --- Quick runs --------------------------------------------------------------

# A few rows run by default, covering every data path, release and family of
# network; the others are marked slow (`python -m pytest -m slow` runs them).
_DEFAULT_QUICK = {
    'abadi2016': ['large_noise'],  # DP-PCA release, MLP.
    'papernot2021': [],
    # Pixels; scattering with released normalisation.
    'tramer_boneh2021': ['mnist_cnn', 'mnist_scatter_linear'],
    # Weight-standardised WRN with 16 views an example: every parameter
    # takes the vmap path, minutes on a CPU. Its parts are tested below.
    'de2022': [],
}
_QUICK_CASES = [
    pytest.param(paper, row, id=f'{paper}-{row}',
                 marks=() if row in _DEFAULT_QUICK[paper]
                 else pytest.mark.slow)
    for paper in PAPERS for row in _paper(paper).ROWS
]


@pytest.mark.parametrize('paper, row', _QUICK_CASES)
def test_quick_run_of_every_row(tmp_path, paper, row):
  module = _paper(paper)
  summary, = reproduce.run_rows(module, paper, [row], 1, str(tmp_path),
                                quick=True, log=lambda line: None)
  assert summary['not_run'] is None
  assert summary['status'] == ['completed']
  assert summary['steps'] == reproduce.QUICK_STEPS
  assert 0 < summary['epsilon'] <= module.ROWS[row].epsilon
  run = tmp_path / paper / row / 'seed0'
  results = json.loads((run / 'results.json').read_text())
  assert results['dataset'] == module.ROWS[row].dataset
  # The ledger's ε, recomputed from its events, includes the release.
  path = str(run / ledger.FILENAME)
  assert ledger.verify(path).epsilon == pytest.approx(results['epsilon'])
  if module.ROWS[row].releases:
    entries = [json.loads(line) for line in open(path)]
    assert entries[0]['data']['setup_event'] is not None
    entries[0]['data']['setup_event'] = None  # Claim no release was made.
    with open(path, 'w') as f:
      f.write('\n'.join(run_configs.rehash_ledger(entries)) + '\n')
    with pytest.raises(ledger.LedgerError, match='setup_event'):
      ledger.verify(path)


def test_a_row_without_its_data_is_reported_not_run(tmp_path):
  module = _paper('abadi2016')
  summary, = reproduce.run_rows(module, 'abadi2016', ['large_noise'], 1,
                                str(tmp_path), str(tmp_path / 'empty'),
                                log=lambda line: None)
  assert summary['not_run'].startswith('data.data_dir')
  assert 'not run: data.data_dir' in reproduce.results_markdown([summary], 'x')


def test_reproduce_cli_prints_and_writes_the_accounting_table(tmp_path):
  accounting_only = subprocess.run(
      [sys.executable, '-m', 'experiments.reproduce', '--paper=de2022',
       '--accounting_only', f'--workdir={tmp_path}'],
      cwd=_ROOT, capture_output=True, text=True, timeout=300)
  assert accounting_only.returncode == 0, accounting_only.stderr
  assert '| wrn16_4_eps1 | 10.000 | 875 | 1 | 0.988 |' in accounting_only.stdout
  table = json.loads((tmp_path / 'de2022_accounting.json').read_text())
  assert [t['row'] for t in table] == list(_paper('de2022').ROWS)
