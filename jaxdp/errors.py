"""The error jaxdp raises for bad input: it names the field and the fix."""


class ConfigError(ValueError):
  """A setting is invalid, or settings contradict each other.

  The message always starts with the offending field (e.g. `dp.delta`) and
  says how to fix it, so a user never has to read a traceback to act on it.
  """

  def __init__(self, field: str, problem: str, fix: str):
    self.field = field
    self.problem = problem
    self.fix = fix
    super().__init__(f'{field}: {problem}. Fix: {fix}')


class MissingDataError(ConfigError):
  """The dataset's files are not where the config says (nothing was wrong
  with the settings themselves); `experiments.reproduce` reports such a row
  as not run and goes on."""
