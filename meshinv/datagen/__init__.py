"""Builders of data, above the renderer (meshinv.data holds the readers, below it): the procedural
bird category (synthetic.py, its shapes and textures in synthetic_shapes.py) and the pseudo-GT UV
maps of pretraining, with the one-time conversion of ConvMesh's released ones (pseudogt.py)."""
