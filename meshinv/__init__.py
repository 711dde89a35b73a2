"""meshinv: single-image textured-mesh reconstruction by GAN inversion (MeshInversion, ECCV 2022).

Packages, lowest first (each imports only from those above it in this list; docs/method.md
describes what they compute):
    utils       generic helpers: typed configs, atomic file writes, image reading, logging, weight files,
                mask IoU, the Frechet distance
    geometry    mesh template, OBJ I/O, weak-perspective camera, rotations
    data        dataset readers only: the Sample type, crops, folders, synthetic, CUB, PASCAL3D+, the
                pseudo-GT and camera-predictions file formats; open_dataset and DatasetInfo
    render      differentiable rasteriser (hard visibility + differentiable shading), RenderSettings
    models      ConvMesh generator, UV and image discriminators, camera predictor, checkpoint files
    losses      Chamfer mask and texture losses, VGG-19 features, regularisers
    datagen     dataset builders that render: the procedural bird category, pseudo-GT UV maps
    training    GAN pretraining and the camera predictor's training
    inversion   the inversion engine (z search, 4-stage optimisation) and its resumable batch job
    evaluation  metrics (mask IoU, FID, 3D metrics) over inversion results, and the report
`meshinv.config` holds the experiment config, one section per stage.
"""

__version__ = "0.1.0"
