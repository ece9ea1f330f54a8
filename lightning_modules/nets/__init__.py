"""Plain ``nn.Module`` networks, no Lightning: ``num_outputs`` first (the data fills it in), lazy
layers infer the input size. Configs name one by its module path, e.g. ``lightning_modules.nets.cnn.CNN``."""
