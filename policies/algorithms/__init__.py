"""The algorithms, one module each, and the staged, pretrained and fine-tuning bases they are built from."""
