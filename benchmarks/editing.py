"""Editing with the shipped mnist_cond (issue 33's numbers), on whatever device is given (a CPU suffices):

1. inpainting the lower half of held-out digits with their labels: the kept pixels' largest change, and the
   share the shipped classifier reads as the label (replacement, and RePaint's resampling);
2. SDEdit of held-out 3s towards 8 at strength 0.8 (the share read as 8), and at 0.3 with their own label
   (the mean absolute change, against that at 0.8), over strengths: change against accuracy;
3. DDIM inversion then reconstruction of held-out digits: PSNR against steps and guidance.

    python benchmarks/editing.py [--n 100] [--steps 50] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

import minidiff as md


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device, n = args.device, args.n
    model, s, _ = md.load_diffusion("mnist_cond", device=device)
    classifier = md.load_classifier(device=device)
    held = md.mnist("heldout")
    g = lambda: torch.Generator(device).manual_seed(0)
    accuracy = lambda x, y: md.metrics.class_accuracy(x.clamp(-1, 1), y, classifier)
    results = {"device": device if device == "cpu" else torch.cuda.get_device_name(), "cpu": platform.processor(),
               "torch": torch.__version__, "n": n, "steps": args.steps}

    # 1. inpainting the lower half
    pick = torch.linspace(0, len(held.images) - 1, n).long()
    x, y = held.images[pick].to(device), held.labels[pick].to(device)
    mask = torch.zeros(1, 1, 28, 28, device=device)
    mask[..., 14:, :] = 1
    for resample in (1, 5):
        start = time.perf_counter()
        out = md.inpaint(model, x, mask, steps=args.steps, y=y, generator=g(), resample=resample)
        results[f"inpaint_resample{resample}"] = {
            "kept_max_change": (out - x)[..., :14, :].abs().max().item(), "accuracy": accuracy(out, y),
            "seconds": round(time.perf_counter() - start, 1)}
        print("inpaint, resample", resample, results[f"inpaint_resample{resample}"], flush=True)

    # 2. SDEdit: 3 -> 8 over strengths, and the same label at low strength
    threes = held.images[held.labels == 3][:n].to(device)
    eights, own = torch.full((len(threes),), 8, device=device), torch.full((len(threes),), 3, device=device)
    change = lambda edited: (edited.clamp(-1, 1) - threes).abs().mean().item()
    rows = {}
    for strength in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
        to_eight = md.sdedit(model, threes, strength, steps=args.steps, y=eights, generator=g())
        same = md.sdedit(model, threes, strength, steps=args.steps, y=own, generator=g())
        rows[strength] = {"as_8": accuracy(to_eight, eights), "change_to_8": change(to_eight),
                          "change_same_label": change(same), "still_3": accuracy(same, own)}
        print("sdedit", strength, rows[strength], flush=True)
    results["sdedit"] = rows

    # 3. DDIM inversion and reconstruction
    x, y = x[:min(n, 100)], y[:min(n, 100)]
    recon = {}
    for steps in (10, 20, 50, 100):
        for w in (None, 2.0):
            z = md.ddim_invert(model, s, x, steps=steps, y=y, guidance_scale=w)
            back = md.ddim_sample(model, s, x.shape, steps=steps, y=y, guidance_scale=w, spacing="linspace", x_T=z)
            recon[f"{steps} steps, w={w}"] = md.metrics.psnr(back, x).mean().item()
            print("inversion", steps, w, round(recon[f"{steps} steps, w={w}"], 2), flush=True)
    results["inversion_psnr_db"] = recon
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    with torch.no_grad():
        main()
