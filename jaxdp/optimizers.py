"""The optimizer that post-processes the privatised gradient, from config.

Anything here sees only the noised, normalised gradient, so any choice costs no
privacy. `sgd`, `adam` and `adamw` read the fields below; any other name is
looked up in optax and called as `optax.<name>(learning_rate)`.
"""

import optax

from jaxdp.errors import ConfigError

SCHEDULES = ('constant', 'cosine', 'linear')


def learning_rate_schedule(opt, num_steps: int) -> optax.Schedule:
  """Warm-up from 0 over `opt.warmup_steps`, then `opt.schedule` to the end."""
  if opt.schedule not in SCHEDULES:
    raise ConfigError('optimizer.schedule', f'unknown schedule {opt.schedule!r}',
                      f'use one of {", ".join(SCHEDULES)}')
  if not 0 <= opt.warmup_steps < max(num_steps, 1):
    raise ConfigError('optimizer.warmup_steps',
                      f'{opt.warmup_steps} is not in [0, {num_steps})',
                      'use fewer warm-up steps than training steps')
  decay_steps = max(num_steps - opt.warmup_steps, 1)
  if opt.schedule == 'constant':
    main = optax.constant_schedule(opt.learning_rate)
  elif opt.schedule == 'cosine':
    main = optax.cosine_decay_schedule(opt.learning_rate, decay_steps)
  else:
    main = optax.linear_schedule(opt.learning_rate, 0.0, decay_steps)
  if opt.warmup_steps == 0:
    return main
  warmup = optax.linear_schedule(0.0, opt.learning_rate, opt.warmup_steps)
  return optax.join_schedules([warmup, main], [opt.warmup_steps])


def build_optimizer(opt, num_steps: int) -> optax.GradientTransformation:
  """The optax optimizer described by `config.optimizer`."""
  if not opt.learning_rate > 0:
    raise ConfigError('optimizer.learning_rate',
                      f'must be > 0, got {opt.learning_rate}',
                      'set a positive learning rate')
  lr = learning_rate_schedule(opt, num_steps)
  if opt.name == 'sgd':
    tx = optax.sgd(lr, momentum=opt.momentum or None, nesterov=opt.nesterov)
    if opt.weight_decay:
      tx = optax.chain(optax.add_decayed_weights(opt.weight_decay), tx)
    return tx
  if opt.name == 'adam':
    return optax.adam(lr, b1=opt.b1, b2=opt.b2, eps=opt.eps)
  if opt.name == 'adamw':
    return optax.adamw(lr, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                       weight_decay=opt.weight_decay)
  factory = getattr(optax, opt.name, None)
  if not callable(factory):
    raise ConfigError('optimizer.name', f'optax has no optimizer {opt.name!r}',
                      'use sgd, adam, adamw, or an optax optimizer name such '
                      'as lamb, lion, adagrad, rmsprop')
  return factory(lr)
