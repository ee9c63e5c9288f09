"""Neural network modules (torch only): GANomaly, AGM, DFP, CCT, MIL, student."""
