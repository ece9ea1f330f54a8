"""Systems (training logic), each given its network, loss and optimizer: base.py (the shared step),
classifier.py, regression.py, sequence.py; losses.py (the registry); optim.py; nets/ (networks).
Configs name a class by its module path, e.g. ``lightning_modules.classifier.Classifier``."""
