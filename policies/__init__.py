"""Learning: the shared diffusion core and one module per algorithm, behind one interface and a registry."""
