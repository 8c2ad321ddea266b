"""jaxdp: differentially private training in JAX/Flax.

The pieces, each in its own module:
  sampling    Poisson / fixed-size batch samplers and their DpEvents
  clipping    per-example clipped gradient sums
  noise       Gaussian noise + normalisation as an optax transformation
  accounting  ε and σ calibration with dp-accounting (pld, rdp, rdp_classic)
  mechanism   builds all of the above together from config.dp
  train       train_and_evaluate(config, workdir): resume, budget, rollbacks
  checkpointing, budget, divergence, ledger, event_history, run_identity
              what lets a run survive (see the README's "Runs that survive")
  audit       canaries, attacks and empirical lower bounds on ε
"""

__version__ = '0.1.0'
