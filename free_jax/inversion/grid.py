"""A PNG grid of recovered images with the teacher's confidence under each (host-side, PIL)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

_CAPTION = 11  # pixel rows under each cell for the confidence text (default bitmap font)


def recovered_grid_png(images, labels, confidences, path, *, samples_per_row: int = 8,
                       scale: int = 0, row_titles=None, row_keys=None) -> np.ndarray:
    """Writes a grid: one row per (teacher, class), ``samples_per_row`` images per row.

    Rows are formed from consecutive images sharing a row key (default: the label) in the order
    given: pass images grouped by teacher, e.g. ``InversionResult.per_group_images[g][t]`` sorted
    by target, or use ``inversion_rows``, whose keys and titles also tell teachers apart.
    Under every image its teacher's probability of the target class is printed (e.g. ".97");
    each row starts with its title (default: the global class id).

    Args:
      images: (M, H, W, C) in [0, 1] (C = 1 or 3). labels: (M,) class ids (row keys).
      confidences: (M,) probabilities in [0, 1].
      path: PNG file to write (parent directories are created).
      samples_per_row: columns of images per row (extra images of a row are skipped).
      scale: integer upscaling of each image (0: chosen so cells are at least 40 px).
      row_titles: optional list of strings, one per row (in row order).
      row_keys: optional (M,) ints; consecutive equal keys form a row (default: ``labels``).

    Returns:
      The grid as a uint8 (H, W, 3) array.
    """
    images = np.asarray(images, np.float32)
    labels, confidences = np.asarray(labels), np.asarray(confidences, np.float32)
    if images.ndim != 4 or images.shape[0] != labels.shape[0] or labels.shape != confidences.shape:
        raise ValueError(f"need images (M, H, W, C), labels (M,), confidences (M,); got "
                         f"{images.shape}, {labels.shape}, {confidences.shape}")
    keys = labels if row_keys is None else np.asarray(row_keys)
    if keys.shape != labels.shape:
        raise ValueError(f"row_keys {keys.shape} must match labels {labels.shape}")
    rows: list[list[int]] = []
    for index, key in enumerate(keys):          # consecutive runs → rows (teacher order kept)
        if rows and keys[rows[-1][0]] == key and len(rows[-1]) < samples_per_row:
            rows[-1].append(index)
        elif not rows or keys[rows[-1][0]] != key:
            rows.append([index])
    titles = ([str(t) for t in row_titles] if row_titles is not None
              else [f"c{int(labels[members[0]])}" for members in rows])
    if len(titles) != len(rows):
        raise ValueError(f"{len(titles)} row titles for {len(rows)} rows")
    height, width = images.shape[1:3]
    scale = scale or max(1, -(-40 // height))
    cell_h, cell_w = height * scale + _CAPTION, width * scale + 2
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    title_w = max([48] + [int(measure.textlength(t)) + 6 for t in titles])
    canvas = Image.new("RGB", (title_w + samples_per_row * cell_w, len(rows) * cell_h + 2), "white")
    draw = ImageDraw.Draw(canvas)
    for r, members in enumerate(rows):
        top = r * cell_h + 1
        title = titles[r]
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


def inversion_rows(per_group_images, per_group_labels, per_group_confidence, targets, teacher_ids):
    """The grid's images of one inversion, one row per (drawn teacher, class), titled by teacher.

    Args:
      per_group_images, per_group_labels, per_group_confidence: ``InversionResult``'s per-group
        lists ((T_g, B, H, W, C), (T_g, B), (T_g, B)). targets: (B,) relative targets.
      teacher_ids: per group, the zoo id of each of its T_g teachers (``Zoo.grouped_ids``).

    Returns:
      (images, labels, confidences, row_keys, titles) for ``recovered_grid_png``: titles read
      ``T<id> c<class>``; a teacher drawn again in the same batch is marked ``(repeat n)``, so
      a row that shows an already shown teacher says so.
    """
    images, labels, confidences, keys, titles = [], [], [], [], []
    drawn: dict[int, int] = {}
    position = 0
    for group_images, group_labels, group_conf, ids in zip(per_group_images, per_group_labels,
                                                           per_group_confidence, teacher_ids):
        if len(ids) != np.shape(group_images)[0]:
            raise ValueError(f"{len(ids)} teacher ids for a group of {np.shape(group_images)[0]} teachers")
        for t, teacher in enumerate(ids):
            teacher = int(teacher)
            repeat = drawn.get(teacher, 0)
            drawn[teacher] = repeat + 1
            ordered = teacher_rows(group_images[t], group_conf[t], group_labels[t], targets)
            images.append(ordered[0]), labels.append(ordered[1]), confidences.append(ordered[2])
            keys.append(position * (int(np.max(targets)) + 1) + np.sort(np.asarray(targets), kind="stable"))
            suffix = f" (repeat {repeat})" if repeat else ""
            titles += [f"T{teacher} c{int(c)}{suffix}" for c in dict.fromkeys(ordered[1].tolist())]
            position += 1
    return (np.concatenate(images), np.concatenate(labels), np.concatenate(confidences), np.concatenate(keys),
            titles)
