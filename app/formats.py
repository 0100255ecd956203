"""The image formats uploads may use (one list, and the sentence every message derives from it),
and the extra outputs a JSON response may include: light enough for the CLI client to import."""

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")
ALLOWED_TEXT = "JPEG, PNG, WebP, BMP or GIF"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"  # what decode recognises and encode writes

# `?include=` names, and the response formats (JSON ones) they apply to.
INCLUDES = ("confidence", "probabilities", "objects")
INCLUDE_FORMATS = ("json", "rle", "objects", "geojson")
