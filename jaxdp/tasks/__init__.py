"""What the trainer trains: a `Task` (data, model, loss, evaluation).

  base          the Task the trainer sees
  image         image classification on a `data.Dataset` and a `models` net
  augmentation  augmentation multiplicity (De et al. 2022)
"""
