"""nnU-Net trainers avnbench ships; this folder is what ``nnUNet_extTrainer`` points at."""
