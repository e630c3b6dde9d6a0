"""Train the bundled ``tiny-shapes`` CLIP model on synthetic coloured shapes.

No pretrained CLIP can be downloaded on the machines this project is built on, so the
project trains its own small open_clip model for one synthetic domain (8 colours x 5 shapes,
see ``embedders.shapes``). Tests, examples and the README demo use it for real text <-> image
retrieval. Regenerate the shipped weights with::

    python -m embedders.train_tiny_clip --out assets/models/tiny-shapes
    python -m embedders.train_tiny_clip --gallery assets/gallery   # demo PNGs only

What it does:

1. Renders a pool of training pictures (``--pool``) with heavy variety: canvases of 48-512 px
   (some non-square), any position/size/rotation, grey, muted, gradient and noise
   backgrounds, antialiasing on/off, blur, sensor noise, JPEG compression, shades sampled
   across each colour name's range. Each picture is resized by the model's own preprocess
   (squash to 64x64, bicubic with antialiasing), exactly as at inference.
2. Trains an open_clip ``CLIP``: ModifiedResNet image tower (layers [1, 1, 1, 1], width 16,
   64 px) and a 1-layer, width-64 text transformer, 64-d joint space. Captions are drawn
   afresh every step from many templates ("a red circle", "a photo of a small blue star
   on a grey background", ...). The loss is CLIP's symmetric cross-entropy with *soft*
   targets: every caption of the same (colour, shape) class in the batch counts as a match,
   since a batch of 128 holds each of the 40 classes several times; a second, half-weight
   image-image term of the same kind makes pictures of one class cluster (image->image
   search). Batches are also rotated by multiples of 90 degrees and mirrored.
3. Saves open_clip's ``local-dir:`` layout: ``open_clip_config.json`` (``model_cfg`` +
   ``preprocess_cfg``) and ``open_clip_model.safetensors`` (fp16), then reloads it through
   ``open_clip.create_model("local-dir:...")`` and prints held-out precision@5.

Deterministic: every picture is drawn from ``numpy.random.default_rng((seed, index))``,
so the pool does not depend on the number of worker processes; torch is seeded, uses
deterministic algorithms and a fixed thread count (``--threads``). Bit-identical weights
need the same torch version and thread count (the shipped weights were reproduced bit for bit
by the command above). About 5 minutes on 2 idle CPU cores: ~1 minute rendering 12,000
pictures, ~0.2 s per training step x 1,200 steps; 7 minutes were measured on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from embedders import shapes

log = logging.getLogger("train_tiny_clip")

MODEL_CFG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "patch_size": None},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}
PREPROCESS_CFG: dict[str, Any] = {
    "size": 64,
    "mode": "RGB",
    "mean": [0.5, 0.5, 0.5],
    "std": [0.25, 0.25, 0.25],
    "interpolation": "bicubic",
    # Squash, not crop: a shape near the edge of a non-square picture must stay in view.
    "resize_mode": "squash",
    "fill_color": 0,
}
N_CLASSES = len(shapes.COLOURS) * len(shapes.SHAPES)


def _resize_transform() -> Any:
    """The resize step of the model's eval preprocess (the rest is ToTensor + Normalize)."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    transform = image_transform_v2(PreprocessCfg(**PREPROCESS_CFG), is_train=False)
    return transform.transforms[0]


_RESIZE: Any = None


def _render_one(args: tuple[int, int]) -> tuple[np.ndarray, int, float, str]:
    global _RESIZE
    if _RESIZE is None:
        _RESIZE = _resize_transform()
    seed, index = args
    rng = np.random.default_rng((seed, index))
    scene = shapes.random_scene(rng)
    image = shapes.augment(shapes.render(scene), rng)
    label = shapes.class_index(scene.colour, scene.shape)
    return np.asarray(_RESIZE(image), dtype=np.uint8), label, scene.size, shapes.background_word(scene)


def render_pool(n: int, seed: int, workers: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Render ``n`` preprocessed 64x64 training pictures with their labels and metadata."""
    jobs = [(seed, i) for i in range(n)]
    if workers > 1:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(workers) as pool:
            rows = pool.map(_render_one, jobs, chunksize=256)
    else:
        rows = [_render_one(j) for j in jobs]
    images = np.stack([r[0] for r in rows])
    labels = np.array([r[1] for r in rows], dtype=np.int64)
    sizes = np.array([r[2] for r in rows], dtype=np.float32)
    backgrounds = [r[3] for r in rows]
    return images, labels, sizes, backgrounds


def _to_tensor(images: np.ndarray) -> Any:
    import torch

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(PREPROCESS_CFG["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(PREPROCESS_CFG["std"]).view(1, 3, 1, 1)
    return (x - mean) / std


def _soft_clip_loss(img: Any, txt: Any, scale: Any, labels: Any) -> Any:
    import torch
    import torch.nn.functional as F

    logits = scale * img @ txt.T
    same = (labels[:, None] == labels[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    loss_i = torch.sum(-targets * F.log_softmax(logits, dim=1), dim=1).mean()
    loss_t = torch.sum(-targets * F.log_softmax(logits.T, dim=1), dim=1).mean()
    # Image-image term: pictures of one class should also cluster among themselves.
    sims = scale * img @ img.T
    sims = sims - torch.eye(len(labels)) * 1e4
    same_ii = same - torch.eye(len(labels))
    has_pos = same_ii.sum(dim=1) > 0
    targets_ii = same_ii[has_pos] / same_ii[has_pos].sum(dim=1, keepdim=True)
    loss_ii = torch.sum(-targets_ii * F.log_softmax(sims[has_pos], dim=1), dim=1).mean()
    return (loss_i + loss_t) / 2 + 0.5 * loss_ii


def train(args: argparse.Namespace) -> Path:
    import open_clip
    import torch

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)

    t0 = time.time()
    images, labels, sizes, backgrounds = render_pool(args.pool, args.seed, args.workers)
    log.info("rendered %d training pictures in %.1fs", len(images), time.time() - t0)

    model = open_clip.CLIP(**MODEL_CFG)
    tokenizer = open_clip.SimpleTokenizer(context_length=MODEL_CFG["text_cfg"]["context_length"])
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "logit_scale" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "logit_scale" in n]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr
    )
    warmup = max(1, args.steps // 15)

    def lr_at(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        return args.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, args.steps - warmup)))

    rng = np.random.default_rng((args.seed, 10**9))
    order = rng.permutation(len(images))
    cursor = 0
    t1 = time.time()
    model.train()
    for step in range(args.steps):
        if cursor + args.batch_size > len(order):
            order, cursor = rng.permutation(len(images)), 0
        idx = order[cursor:cursor + args.batch_size]
        cursor += args.batch_size
        batch = images[idx]
        # Free augmentations on the small pictures: shapes keep their names under these.
        k = int(rng.integers(4))
        batch = np.rot90(batch, k, axes=(1, 2))
        if rng.random() < 0.5:
            batch = batch[:, :, ::-1]
        x = _to_tensor(np.ascontiguousarray(batch))
        texts = [
            shapes.caption(
                shapes.COLOURS[labels[i] // len(shapes.SHAPES)],
                shapes.SHAPES[labels[i] % len(shapes.SHAPES)],
                rng,
                size=float(sizes[i]),
                background=backgrounds[i],
            )
            for i in idx
        ]
        tokens = tokenizer(texts)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        img_f, txt_f, scale = model(x, tokens)
        loss = _soft_clip_loss(img_f, txt_f, scale, torch.from_numpy(labels[idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 50 == 0 or step == args.steps - 1:
            log.info("step %4d  loss %.4f  scale %.1f  lr %.2e  %.1fs", step, loss.item(), scale.item(),
                     lr_at(step), time.time() - t1)
    log.info("trained %d steps in %.1fs", args.steps, time.time() - t1)
    return save(model, Path(args.out), args)


def save(model: Any, out: Path, args: argparse.Namespace) -> Path:
    """Write open_clip's local-dir layout (config JSON + fp16 safetensors)."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").half().contiguous() for k, v in model.state_dict().items()}
    weights = out / "open_clip_model.safetensors"
    save_file(state, str(weights), metadata={"format": "pt"})
    weights.chmod(0o644)  # save_file creates it owner-only; the model is meant to be shared
    config = {
        "model_cfg": MODEL_CFG,
        "preprocess_cfg": PREPROCESS_CFG,
        "description": (
            "tiny-shapes: a small CLIP for a synthetic domain of 8 colours x 5 shapes, trained by "
            "`python -m embedders.train_tiny_clip`; for tests, examples and demos, not real photos."
        ),
        "training": {"seed": args.seed, "steps": args.steps, "batch_size": args.batch_size,
                     "pool": args.pool, "lr": args.lr},
    }
    (out / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    log.info("saved %s", out)
    return out


def evaluate(model_dir: Path, per_class: int = 8, seed: int = 4242) -> dict[str, float]:
    """Held-out precision@5 on freshly rendered pictures (and on tests/alt_shapes.py if present)."""
    from embedders.open_clip import OpenCLIPEmbeddingFunction

    ef = OpenCLIPEmbeddingFunction(model_name=f"local-dir:{model_dir}", device="cpu")
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for colour in shapes.COLOURS:
        for shape in shapes.SHAPES:
            for _ in range(per_class):
                images.append(shapes.augment(shapes.render(shapes.random_scene(rng, colour, shape)), rng))
                labels.append((colour, shape))
    metrics = {f"own_{k}": v for k, v in precision_at_k(ef, images, labels).items()}
    alt = Path(__file__).resolve().parents[1] / "tests" / "alt_shapes.py"
    if alt.is_file():
        import importlib.util

        spec = importlib.util.spec_from_file_location("alt_shapes", alt)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        alt_images, alt_labels = module.alt_dataset(per_class=per_class)
        metrics.update({f"alt_{k}": v for k, v in precision_at_k(ef, alt_images, alt_labels).items()})
    return metrics


def precision_at_k(ef: Any, images: list[Any], labels: list[tuple[str, str]], k: int = 5) -> dict[str, float]:
    """Text->image and image->image precision@k (plain "a {colour} {shape}" queries).

    Example:
        >>> from embedders import HashEmbeddingFunction
        >>> imgs = [shapes.render_shape("red", "circle", size=48)] * 6
        >>> precision_at_k(HashEmbeddingFunction(), imgs, [("red", "circle")] * 6)["image_to_image_p5"]
        1.0
    """
    img = np.stack(ef(images))
    classes = sorted(set(labels))
    txt = np.stack(ef([shapes.caption(c, s) for c, s in classes]))
    lab = np.array([classes.index(x) for x in labels])
    t2i = [float(np.mean(lab[np.argsort(-(img @ t))[:k]] == c)) for c, t in enumerate(txt)]
    sims = img @ img.T
    np.fill_diagonal(sims, -np.inf)
    i2i = [float(np.mean(lab[np.argsort(-row)[:k]] == lab[i])) for i, row in enumerate(sims)]
    return {f"text_to_image_p{k}": float(np.mean(t2i)), f"image_to_image_p{k}": float(np.mean(i2i))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="model folder to write, e.g. assets/models/tiny-shapes")
    parser.add_argument("--gallery", type=Path, help="also (or only) render demo PNGs into this folder")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--pool", type=int, default=12000, help="training pictures to render")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (part of determinism)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="rendering processes")
    parser.add_argument("--eval-only", action="store_true", help="evaluate --out without training")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    log.setLevel(logging.INFO)
    if args.out is None and args.gallery is None:
        parser.error("nothing to do: pass --out (train a model) and/or --gallery (render demo PNGs)")
    if args.gallery is not None:
        paths = shapes.render_gallery(args.gallery)
        log.info("wrote %d gallery pictures to %s", len(paths), args.gallery)
    if args.out is not None:
        if not args.eval_only:
            train(args)
        for name, value in evaluate(args.out).items():
            print(f"{name}: {value:.3f}")


if __name__ == "__main__":
    main()
