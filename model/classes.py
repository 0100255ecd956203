"""Class names and palette for the synthetic dataset, and the shared ignore index.

The checkpoint stores the classes and palette it was trained with; the service reads them from
there, never from here.
"""

IGNORE_INDEX = 255

SYNTHETIC_CLASSES = ("background", "disc", "square", "triangle", "ring", "cross", "star")

_BASE_PALETTE = (
    (0, 0, 0),
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
)


def default_palette(num_classes: int) -> list[list[int]]:
    """Distinct RGB colours, background black; cycles with a shift past the base list."""
    out = []
    for i in range(num_classes):
        r, g, b = _BASE_PALETTE[i % len(_BASE_PALETTE)]
        shift = (i // len(_BASE_PALETTE)) * 37
        out.append([(r + shift) % 256, (g + 2 * shift) % 256, (b + 3 * shift) % 256])
    return out
