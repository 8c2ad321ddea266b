"""What the trainer trains: a `Task` (data, model, loss, evaluation).

  base          the Task the trainer sees
  image         image classification on a `data.Dataset` and a `models` net
  augmentation  augmentation multiplicity (De et al. 2022)

A new task is one module with `build(config) -> Task` plus one line in
`TASKS`; the trainer builds whatever `config.task` names and never imports
a task's module itself.
"""

import importlib

from jaxdp.errors import ConfigError
from jaxdp.tasks.base import Task

# config.task -> the module whose `build(config)` makes it. Imported only
# when chosen: the language-model stack (tokenizers, weight readers) stays
# out of an image run.
TASKS = {
    'classification': 'jaxdp.tasks.image',
    'language_model': 'jaxdp.lm.task',
}


def build_task(config) -> Task:
  """The task `config.task` names, with its data loaded and model built."""
  if config.task not in TASKS:
    raise ConfigError('task', f'unknown task {config.task!r}',
                      f'use one of {", ".join(TASKS)}')
  return importlib.import_module(TASKS[config.task]).build(config)
