"""The image formats uploads may use: one list, and the sentence every message derives from it."""

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")
ALLOWED_TEXT = "JPEG, PNG, WebP, BMP or GIF"
