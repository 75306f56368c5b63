"""The shared diffusion core: schedules, networks, the model, samplers, guidance, conditioning, training loops, checkpoints."""
