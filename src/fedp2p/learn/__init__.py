"""Learning core: data sets, shards, models, training and knowledge distillation."""
