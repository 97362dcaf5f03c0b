"""Image decoding shared by training, the CLI, REST and RunPod: see :func:`load_image`."""
from pneumo_core.imaging.decode import (DecodedImage, ImageError, ImageLimits, ImageTooLargeError,
                                        UnreadableImageError, UnsupportedFormatError, load_image,
                                        sniff_format)

__all__ = ["DecodedImage", "ImageError", "ImageLimits", "ImageTooLargeError",
           "UnreadableImageError", "UnsupportedFormatError", "load_image", "sniff_format"]
