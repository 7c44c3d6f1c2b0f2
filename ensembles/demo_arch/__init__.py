"""Test and demo architectures: tiny random-init PaliGemma and DETR models built offline."""
