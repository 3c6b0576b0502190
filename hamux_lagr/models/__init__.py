"""Ready-made models built from the library's parts.

- `ImageEnergyTransformer`: the Energy Transformer's masked-image model (Hoover et al.
  2023), able to load the authors' released checkpoint.
- `IMAGENET_MEAN`, `IMAGENET_STD`, `normalise_image`, `denormalise_image`: the image
  normalisation its released weights expect.
"""

from ._image_et import ImageEnergyTransformer as ImageEnergyTransformer
from ._patches import (
    denormalise_image as denormalise_image,
    IMAGENET_MEAN as IMAGENET_MEAN,
    IMAGENET_STD as IMAGENET_STD,
    normalise_image as normalise_image,
)
