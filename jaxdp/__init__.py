"""jaxdp: differentially private training in JAX/Flax.

The pieces, by concern (docs/extending.md says how a new one plugs in):
  mechanism   builds sampler, clipped sum, noise and accountant event
              together from config.dp: the one place they meet
  sampling    Poisson / fixed-size batch samplers and their DpEvents
  streams     every random stream, the noise key, secure seeds, init key
  clipping/   per-example clipped sums: the rules (RULES) and the methods
  noise/      the noise links of the optax chain (LINKS), noise schedules
  accounting/ ε and σ calibration with dp-accounting, history, budget
  train/      train_and_evaluate(config, workdir): resume, budget, rollbacks,
              checkpoints and the privacy ledger (docs/survival.md)
  tasks/      what is trained (TASKS): image classification, language models
  audit/      canaries, attacks and empirical lower bounds on ε
  tuning/     private hyperparameter search, quantum-inspired search (qiea/)
  studies/    benchmark and paper-table drivers for experiments/ and tests
"""

__version__ = '0.1.0'
