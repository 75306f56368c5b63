"""Studies with committed outputs: exactness and fine-tuning on the toy bandits, the noise floor, performance, the quick benchmark."""
