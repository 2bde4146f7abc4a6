"""A PNG grid of recovered images with the teacher's confidence under each (host-side, PIL)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

_CAPTION = 11  # pixel rows under each cell for the confidence text (default bitmap font)


def recovered_grid_png(images, labels, confidences, path, *, samples_per_row: int = 8,
                       scale: int = 0, row_titles=None) -> np.ndarray:
    """Writes a grid: one row per (teacher, class), ``samples_per_row`` images per row.

    Rows are formed from consecutive images sharing a label in the order given: pass images
    grouped by teacher, e.g. ``InversionResult.per_group_images[g][t]`` sorted by target.
    Under every image its teacher's probability of the target class is printed (e.g. ".97");
    each row starts with its title (default: the global class id).

    Args:
      images: (M, H, W, C) in [0, 1] (C = 1 or 3). labels: (M,) class ids (row keys).
      confidences: (M,) probabilities in [0, 1].
      path: PNG file to write (parent directories are created).
      samples_per_row: columns of images per row (extra images of a row are skipped).
      scale: integer upscaling of each image (0: chosen so cells are at least 40 px).
      row_titles: optional list of strings, one per row (in row order).

    Returns:
      The grid as a uint8 (H, W, 3) array.
    """
    images = np.asarray(images, np.float32)
    labels, confidences = np.asarray(labels), np.asarray(confidences, np.float32)
    if images.ndim != 4 or images.shape[0] != labels.shape[0] or labels.shape != confidences.shape:
        raise ValueError(f"need images (M, H, W, C), labels (M,), confidences (M,); got "
                         f"{images.shape}, {labels.shape}, {confidences.shape}")
    rows: list[list[int]] = []
    for index, label in enumerate(labels):      # consecutive runs → rows (teacher order kept)
        if rows and labels[rows[-1][0]] == label and len(rows[-1]) < samples_per_row:
            rows[-1].append(index)
        elif not rows or labels[rows[-1][0]] != label:
            rows.append([index])
    height, width = images.shape[1:3]
    scale = scale or max(1, -(-40 // height))
    cell_h, cell_w = height * scale + _CAPTION, width * scale + 2
    title_w = 48
    canvas = Image.new("RGB", (title_w + samples_per_row * cell_w, len(rows) * cell_h + 2), "white")
    draw = ImageDraw.Draw(canvas)
    for r, members in enumerate(rows):
        top = r * cell_h + 1
        title = row_titles[r] if row_titles is not None else f"c{int(labels[members[0]])}"
        draw.text((2, top + height * scale // 2 - 4), str(title), fill="black")
        for c, index in enumerate(members):
            pixels = np.clip(images[index] * 255.0 + 0.5, 0, 255).astype(np.uint8)
            if pixels.shape[-1] == 1:
                pixels = np.repeat(pixels, 3, axis=-1)
            tile = Image.fromarray(pixels).resize((width * scale, height * scale), Image.NEAREST)
            left = title_w + c * cell_w
            canvas.paste(tile, (left, top))
            confidence = float(confidences[index])
            colour = (0, 128, 0) if confidence >= 0.5 else (200, 0, 0)
            draw.text((left + 1, top + height * scale), confidence_label(confidence), fill=colour)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return np.asarray(canvas)


def confidence_label(confidence: float) -> str:
    """A probability in the grid's short form: 0.36 → ".36", 0.996 → "1.00" (rounded first)."""
    text = f"{confidence:.2f}"
    return text[1:] if text.startswith("0") else text


def teacher_rows(images, confidences, labels, targets):
    """Reorders one teacher's (B, ...) recovered images so each class is contiguous.

    Args:
      images: (B, H, W, C). confidences: (B,). labels: (B,) global ids. targets: (B,) relative.

    Returns:
      (images, labels, confidences) sorted by relative target (stable).
    """
    order = np.argsort(np.asarray(targets), kind="stable")
    return np.asarray(images)[order], np.asarray(labels)[order], np.asarray(confidences)[order]
