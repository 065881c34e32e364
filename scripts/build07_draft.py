"""Draft builder for solutions/07_guidance.ipynb (deleted once the notebook is the source)."""
import json
import sys

cells = []


def md(src):
    cells.append({"cell_type": "markdown", "metadata": {}, "source": src.strip("\n")})


def code(src):
    cells.append({"cell_type": "code", "metadata": {}, "source": src.strip("\n"), "outputs": [], "execution_count": None})


md(r"""
# 07 · Classifier-free guidance: trading diversity for fidelity, measured

The shipped digit model was trained with one label in ten replaced by a **null label** that means
"no label". So one network knows two things: what a digit looks like, and what a *3* looks like.
Classifier-free guidance (Ho & Salimans 2022) samples with the difference between the two pushed
further than the network ever predicted. This notebook derives why that works, measures what it
buys and what it costs, shows where it breaks and measures three fixes, and then guides a model
conditioned on two attributes at once.

**You will learn**
- how a label enters the U-Net (its embedding is added to the time embedding), label dropout and the null label, with a conditional and an unconditional model trained side by side;
- why guidance works: Bayes' rule on scores, the noise-conditional classifier of classifier guidance, and the *implicit* classifier that CFG uses instead, seen as an image;
- the trade-off, measured for $w \in \{0, 1, 1.5, 2, 3, 5, 8\}$: Fréchet distance over its floor, class accuracy and within-class diversity, and the quality-against-accuracy curve;
- why large $w$ gives over-saturated ("deep-fried") samples, and three fixes measured on the same table: thresholding $\hat x_0$, rescaling the guided prediction, guiding only in an interval of noise levels;
- guidance with two attributes (shape and colour): towards one, both, or away from one.

**Exercises**: label dropout; the guided prediction in one batched pass; rescaled guidance.
""")

code(r"""
import time
import torch
import matplotlib.pyplot as plt
from torch import nn
import minidiff as md
from minidiff.guidance import ClassifierFree, Rescaled, Interval, Thresholded, Composed

torch.manual_seed(0)
device = "cuda" if torch.cuda.is_available() else "cpu"
print("profile:", md.profile(), "| device:", device)
model, s, diffusion = md.load_diffusion("mnist_cond", device=device)     # notebook 05's shipped model
print(f"the shipped digit model predicts {model.target!r}; null label {model.null_label}; "
      f"trained with p_uncond = {diffusion.p_uncond}")
gen = lambda seed=0: torch.Generator(device).manual_seed(seed)
""")

md(r"""
## 1 · Conditioning: how a label gets into the network

Notebook 04 turned the timestep into a vector $e_t = \mathrm{MLP}(\text{sinusoids}(t))$ that every
residual block reads (through its scale and shift). A class label takes the same road: it picks a
learned row $E[y]$ of an embedding table, and the block sees

$$
e = \mathrm{MLP}(\text{sinusoids}(t)) + E[y].
$$

The table has one row more than there are classes: row 10, the **null label** $\varnothing$, means
"no label". Nothing else in the network knows about classes. The difference between the conditioning
vectors of two labels is therefore the same at every $t$:
""")

code(r"""
t = torch.tensor([0, 250, 999], device=device)
with torch.no_grad():
    e3 = model.embed(t, torch.full((3,), 3, device=device), 3, device)
    e_null = model.embed(t, torch.full((3,), model.null_label, device=device), 3, device)
    rows = model.class_emb.weight
difference = e3 - e_null
print("‖e(t, 3) − e(t, ∅)‖ at t = 0, 250, 999:", [f"{v:.4f}" for v in difference.norm(dim=1).tolist()])
assert torch.allclose(difference, (rows[3] - rows[model.null_label]).expand(3, -1), atol=1e-5)
""")

md(r"""
### Label dropout and the null label

To learn both $p(x \mid y)$ and $p(x)$ with one network, training replaces each label by $\varnothing$
with probability $p_\text{uncond}$ (10% for the shipped model). The loss is unchanged: for a dropped
label the network is simply asked to denoise without knowing the class, which is the unconditional
model.

### Exercise 1 — label dropout

Implement `drop_labels(y, p_uncond, null_label)`: return a copy of the labels `y` in which each one,
independently, has been replaced by `null_label` with probability `p_uncond`. The check tests its
properties (its output is random): $p = 0$ and $p = 1$, the share dropped, each label on its own.
""")

code(r"""
def drop_labels(y, p_uncond, null_label):
    ### BEGIN SOLUTION
    drop = torch.rand(y.shape, device=y.device) < p_uncond
    return torch.where(drop, torch.full_like(y, null_label), y)
    ### END SOLUTION
""")

code(r"""
drop_labels = md.exercises.check_drop_labels(drop_labels)
""")

md(r"""
### Conditional and unconditional, side by side

A U-Net needs minutes of GPU time to draw digits, so the side-by-side comparison runs on data whose
answer we can see at once: points in the plane from four overlapping Gaussian blobs, one per class.
The denoiser is a small MLP built exactly like the U-Net's conditioning: sinusoids of $t$ through
an MLP, plus a row of a label table with a null row. A point is stored as a $2 \times 1 \times 1$
"image", so the course's samplers and guidance run on it unchanged. Two copies are trained on the
same data for the same steps: one sees labels (dropped 10% of the time), the other never does.
""")

code(r"""
CENTRES = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])
SPREAD = 0.45

def blobs(n, generator):
    # n points from the four blobs, class k around CENTRES[k]; as (n, 2, 1, 1) "images"
    y = torch.randint(0, 4, (n,), generator=generator)
    x = CENTRES[y] + SPREAD * torch.randn(n, 2, generator=generator)
    return x.view(n, 2, 1, 1), y

class ToyDenoiser(nn.Module):
    # f(x_t, t, y): an MLP on the 2 coordinates, conditioned like the U-Net: e = MLP(sinusoids(t)) + E[y]
    def __init__(self, num_classes=None, width=128):
        super().__init__()
        self.num_classes, self.target = num_classes, "v"
        self.time_mlp = nn.Sequential(nn.Linear(32, width), nn.SiLU(), nn.Linear(width, width))
        self.class_emb = nn.Embedding(num_classes + 1, width) if num_classes else None   # row num_classes: ∅
        self.inp = nn.Linear(2, width)
        self.net = nn.Sequential(nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width),
                                 nn.SiLU(), nn.Linear(width, 2))

    @property
    def null_label(self):
        return self.num_classes

    def forward(self, x, t, y=None):
        e = self.time_mlp(md.timestep_embedding(t, 32))
        if self.class_emb is not None:
            e = e + self.class_emb(torch.full_like(t, self.num_classes) if y is None else y)
        return self.net(self.inp(x.flatten(1)) + e).view_as(x)

def train_toy(num_classes, p_uncond, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net, toy_s = ToyDenoiser(num_classes).to(device), md.NoiseSchedule.linear(1000).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for step in range(steps):
        x0, y = (v.to(device) for v in blobs(256, g))
        y = drop_labels(y, p_uncond, num_classes) if num_classes else None
        loss = md.diffusion_loss(net, x0, toy_s, target="v", y=y)
        opt.zero_grad(); loss.backward(); opt.step()
    return net.eval(), toy_s

TOY_STEPS = md.by_profile(smoke=500, default=2500, full=4000)
start = time.perf_counter()
toy_cond, toy_s = train_toy(4, 0.1, TOY_STEPS)
toy_uncond, _ = train_toy(None, 0.0, TOY_STEPS)
print(f"two toy denoisers, {TOY_STEPS} steps each: {time.perf_counter() - start:.1f} s")
""")

code(r"""
def toy_sample(net, n, y=None, guidance=None, seed=0):
    with torch.no_grad():
        x = md.ddim_sample(net, toy_s, (n, 2, 1, 1), steps=50, y=None if y is None else y.to(device),
                           guidance_scale=guidance, generator=gen(seed))
    return x.flatten(1).cpu()

def nearest_centre(points):
    return torch.cdist(points, CENTRES).argmin(dim=1)

n_toy = 2000
y_toy = torch.arange(n_toy) % 4
real_points, real_y = blobs(n_toy, torch.Generator().manual_seed(1))
real_points = real_points.flatten(1)
bayes = (nearest_centre(real_points) == real_y).float().mean().item()     # the best any sampler can be "right"
pts_u = toy_sample(toy_uncond, n_toy)
pts_c = toy_sample(toy_cond, n_toy, y_toy)
pts_null = toy_sample(toy_cond, n_toy, torch.full((n_toy,), 4))           # the conditional net, given ∅

fig, axes = plt.subplots(1, 4, figsize=(16, 4), sharex=True, sharey=True)
colours = plt.cm.tab10(range(4))
panels = [("data (coloured by class)", real_points, real_y), ("unconditional model", pts_u, None),
          ("conditional model, label ∅", pts_null, None), ("conditional model, label y", pts_c, y_toy)]
for ax, (title, p, c) in zip(axes, panels):
    ax.scatter(p[:, 0], p[:, 1], s=2, c="k" if c is None else colours[c], alpha=0.5)
    ax.set(title=title, xlim=(-3, 3), ylim=(-3, 3), aspect="equal")
plt.tight_layout()

share = lambda p: torch.bincount(nearest_centre(p), minlength=4).float().div(len(p))
print("share of samples nearest each centre (data: 0.25 each)")
print("  unconditional:        ", [f"{v:.2f}" for v in share(pts_u).tolist()])
print("  conditional, label ∅: ", [f"{v:.2f}" for v in share(pts_null).tolist()])
acc_c = (nearest_centre(pts_c) == y_toy).float().mean().item()
print(f"conditional samples nearest their own label's centre: {acc_c:.1%} "
      f"(real points nearest their own centre: {bayes:.1%}, as the blobs overlap)")
assert abs(acc_c - bayes) < md.by_profile(smoke=0.1, default=0.05, full=0.05)   # smoke trains for seconds only
assert share(pts_u).min() > 0.15 and share(pts_null).min() > 0.15      # every blob is drawn
""")

md(r"""
Given a label, the conditional model draws that blob, overlap included: its samples fall nearest their
own centre about as often as real points do. The unconditional model and the conditional model given
$\varnothing$ both draw the whole mixture (every centre gets its share of the samples, a quarter in the
data; the $\varnothing$ model's shares are the less even), but blurred: mapping
noise onto four separate blobs is harder than onto one, and the conditional network practised its
unconditional half on only 10% of its batches. One network, two models; the unconditional one is the
weaker, which is part of why guidance helps.

The same holds for the shipped U-Net. On held-out digits, its denoising loss is lowest with the true
label, higher with $\varnothing$, and highest with a wrong label: the label carries information, and a
wrong one misleads.
""")

code(r"""
heldout = md.mnist("heldout")
n_loss = md.by_profile(smoke=100, default=200, full=1000)
x0, y0 = heldout.images[:n_loss].to(device), heldout.labels[:n_loss].to(device)
g = gen(0)
t = torch.randint(0, s.num_steps, (n_loss,), device=device, generator=g)
noise = torch.randn(x0.shape, device=device, generator=g)
losses = {}
with torch.no_grad():
    for name, labels in [("true label", y0), ("null label ∅", torch.full_like(y0, model.null_label)),
                         ("wrong label", (y0 + 1 + torch.randint(0, 9, y0.shape, device=device, generator=g)) % 10)]:
        losses[name] = md.diffusion_loss(model, x0, s, target=model.target, y=labels, t=t, noise=noise).item()
for name, value in losses.items():
    print(f"denoising loss with the {name:13s} {value:.4f}")
assert losses["true label"] < losses["null label ∅"] < losses["wrong label"]
""")

md(r"""
## 2 · Why guidance works

**Bayes' rule on scores.** Notebook 05's network estimates the noise, and the noise estimates the
*score* of the noised data, $\nabla_{x_t}\log p_t(x_t) = -\varepsilon_\theta(x_t, t)/\sigma_t$ with
$\sigma_t = \sqrt{1-\bar\alpha_t}$. For a class $y$, Bayes' rule $p(x_t \mid y) = p(y \mid x_t)\,p(x_t)/p(y)$
gives, since $p(y)$ does not depend on $x_t$,

$$
\nabla_{x_t}\log p(x_t \mid y) = \nabla_{x_t}\log p(x_t) + \nabla_{x_t}\log p(y \mid x_t).
$$

**Classifier guidance** (Dhariwal & Nichol 2021) trains a separate classifier $p_\phi(y \mid x_t, t)$
on *noisy* images, every $t$, and samples with the unconditional score plus $w$ times its gradient:

$$
\tilde\varepsilon = \varepsilon_\theta(x_t, t) - w\,\sigma_t\,\nabla_{x_t}\log p_\phi(y \mid x_t).
$$

$w = 1$ is the conditional score; $w > 1$ aims at $p(x_t)\,p(y \mid x_t)^{w}$, which favours images the
classifier is surer about. The price: a second network trained on noisy inputs at every noise level,
and gradients of a classifier, which can improve its score without improving the image.

**Classifier-free guidance** (Ho & Salimans 2022) reads Bayes' rule the other way round. The
conditional and unconditional outputs of one network define an implicit classifier,

$$
\nabla_{x_t}\log p(y \mid x_t) = \nabla_{x_t}\log p(x_t \mid y) - \nabla_{x_t}\log p(x_t)
= -\frac{\varepsilon_\theta(x_t, t, y) - \varepsilon_\theta(x_t, t, \varnothing)}{\sigma_t},
$$

and substituting it into classifier guidance gives

$$
\tilde\varepsilon = \varepsilon_u + w\,(\varepsilon_c - \varepsilon_u), \qquad
\varepsilon_c = \varepsilon_\theta(x_t, t, y),\ \ \varepsilon_u = \varepsilon_\theta(x_t, t, \varnothing).
$$

$w = 0$ is the unconditional model, $w = 1$ the conditional one, $w > 1$ extrapolates past it. (The
course's model predicts $v$, not $\varepsilon$; at a given $x_t$ and $t$, $\varepsilon$ is an affine function
of $v$, so mixing the two $v$'s and converting is the same as converting and mixing; a unit test checks
it.) Two caveats: the mixed $\tilde\varepsilon$ is not the exact score of any noised version of
$p(x)\,p(y \mid x)^w$, and the "classifier" is only as good as the difference of two noisy estimates.
Both show up in section 4.

### Exercise 2 — the guided prediction, in one batched pass

Implement `guided_prediction(model, x_t, t, y, null_label, w)` for a batch `x_t` (B, C, H, W), timesteps
`t` (B,) and labels `y` (B,): return $\tilde\varepsilon$ (in whatever the model outputs). Call the model
**once**, on a batch of $2B$: the conditional half with `y`, the unconditional half with the null label.
Two calls of size $B$ give the same numbers, but one call of $2B$ uses the hardware better, and the check
asks for it.
""")

code(r"""
def guided_prediction(model, x_t, t, y, null_label, w):
    ### BEGIN SOLUTION
    null = torch.full_like(y, null_label)
    both = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([y, null]))
    cond, uncond = both.chunk(2)
    return uncond + w * (cond - uncond)
    ### END SOLUTION
""")

code(r"""
guided_prediction = md.exercises.check_guided_prediction(guided_prediction)
""")

md(r"""
Your function against the samplers' own (`md.samplers.predict_eps`, which also turns $\hat v$ into
$\hat\varepsilon$), on the shipped model:
""")

code(r"""
x_t = torch.randn(4, 1, 28, 28, device=device, generator=gen(1))
t4, y4 = torch.full((4,), 600, device=device), torch.tensor([0, 3, 5, 8], device=device)
with torch.no_grad():
    mine = md.eps_and_x0(guided_prediction(model, x_t, t4, y4, model.null_label, 3.0), x_t, 600, s, model.target)[0]
    theirs = md.samplers.predict_eps(model, x_t, 600, s, y4, guidance_scale=3.0)[0]
print("largest difference:", (mine - theirs).abs().max().item())
assert torch.allclose(mine, theirs, atol=1e-3 if device == "cpu" else 0.1)       # CUDA samplers run in bf16
""")

md(r"""
### The implicit classifier, seen

First on the toy data: the arrows are $-(\varepsilon_c - \varepsilon_u)/\sigma_t$, the implicit
$\nabla \log p(y \mid x_t)$ for class 0 (top right), at a moderate noise level. They point away from
the other classes, not just towards class 0's centre. Then guided samples of class 0 at growing $w$:
guidance does not only pick the blob, it pushes its samples to the side far from the others, and at
$w = 8$ right out of the data (the axes reach further than in the first panel).
""")

code(r"""
t_arrow = 300
grid = torch.stack(torch.meshgrid(torch.linspace(-2.5, 2.5, 15), torch.linspace(-2.5, 2.5, 15), indexing="xy"), -1).view(-1, 2)
x_grid, t_grid = grid.view(-1, 2, 1, 1).to(device), torch.full((len(grid),), t_arrow, device=device)
with torch.no_grad():
    eps_c = md.eps_and_x0(toy_cond(x_grid, t_grid, torch.zeros_like(t_grid)), x_grid, t_arrow, toy_s, "v")[0]
    eps_u = md.eps_and_x0(toy_cond(x_grid, t_grid, torch.full_like(t_grid, 4)), x_grid, t_arrow, toy_s, "v")[0]
sigma = toy_s.sqrt_one_minus_alphas_cumprod[t_arrow].item()
arrows = (-(eps_c - eps_u) / sigma).flatten(1).cpu()

fig, axes = plt.subplots(1, 5, figsize=(20, 4))
axes[0].scatter(real_points[:, 0], real_points[:, 1], s=1, c=colours[real_y], alpha=0.2)
axes[0].quiver(grid[:, 0], grid[:, 1], arrows[:, 0], arrows[:, 1], color="k")
axes[0].set(title=f"implicit ∇ log p(y=0 | x_t), t = {t_arrow}", xlim=(-3, 3), ylim=(-3, 3), aspect="equal")
toy_w = [0.0, 1.0, 3.0, 8.0]
zeros = torch.zeros(500, dtype=torch.long)
toy_guided = {w: toy_sample(toy_cond, 500, zeros, w, seed=3) for w in toy_w}
for ax, w in zip(axes[1:], toy_w):
    p = toy_guided[w]
    ax.scatter(real_points[:, 0], real_points[:, 1], s=1, c="0.85")
    ax.scatter(p[:, 0], p[:, 1], s=2, color=colours[0])
    ax.set(title=f"class 0, w = {w:g}", xlim=(-3, 5), ylim=(-3, 5), aspect="equal")
plt.tight_layout()
for w in toy_w:
    p = toy_guided[w]
    print(f"w = {w:g}: nearest centre 0 for {(nearest_centre(p) == 0).float().mean():6.1%}; "
          f"mean position ({p[:, 0].mean():+.2f}, {p[:, 1].mean():+.2f}); spread {p.std(dim=0).mean():.2f}")
assert (nearest_centre(toy_guided[8.0]) == 0).float().mean() > (nearest_centre(toy_guided[1.0]) == 0).float().mean()
assert toy_guided[8.0].mean(0).sum() > toy_guided[1.0].mean(0).sum()       # pushed beyond the centre (1, 1)
""")

md(r"""
Now on a digit. Take a held-out **3**, noise it to $t = 500$, and ask the shipped model for the
implicit classifier's gradient towards each class: which pixels to brighten (red) or darken (blue) to
make $x_t$ more like that digit. The figure shows one noise draw; the norms printed below it are the
mean over 16 draws of the noise. Towards 0 it brightens the left side, closing the loop; towards 4 it
darkens the lower curve; towards 3 itself there is least to change.
""")

code(r"""
three = heldout.images[(heldout.labels == 3).nonzero()[0]].to(device)       # one held-out 3, (1, 1, 28, 28)
t_img, draws = 500, 16
noise = torch.randn((draws, 1, 28, 28), generator=torch.Generator().manual_seed(4)).to(device)   # the same on any device
x_t = md.q_sample(three.expand(draws, -1, -1, -1), t_img, s, noise)
t_batch = torch.full((draws,), t_img, device=device)

def implicit_gradient(y):
    # −(ε_c − ε_u)/σ_t for label y at each of the noisy copies, in float32 (also on a GPU)
    eps = lambda labels: md.eps_and_x0(model(x_t, t_batch, labels), x_t, t_img, s, model.target)[0]
    with torch.no_grad():
        return -(eps(torch.full_like(t_batch, y)) - eps(torch.full_like(t_batch, model.null_label))) / s.sqrt_one_minus_alphas_cumprod[t_img]

gradients = torch.stack([implicit_gradient(k) for k in range(10)]).cpu()    # (10 classes, draws, 1, 28, 28)
implicit = gradients[:, 0]                                                  # the first draw, for the figure

fig, axes = plt.subplots(1, 12, figsize=(18, 2.2))
axes[0].imshow(three[0, 0].cpu(), cmap="gray", vmin=-1, vmax=1); axes[0].set_title("x_0")
axes[1].imshow(x_t[0, 0].cpu().clamp(-1, 1), cmap="gray", vmin=-1, vmax=1); axes[1].set_title(f"x_t, t={t_img}")
limit = implicit.abs().max().item()
for k in range(10):
    axes[k + 2].imshow(implicit[k, 0], cmap="RdBu_r", vmin=-limit, vmax=limit)
    axes[k + 2].set_title(f"towards {k}")
for ax in axes:
    ax.set_axis_off()
plt.suptitle("the implicit classifier's gradient −(ε_c − ε_u)/σ_t: red brightens, blue darkens", y=1.05)
norms = gradients.flatten(2).norm(dim=2).mean(dim=1)                        # mean over the draws
print(f"gradient norm towards each class, mean of {draws} noise draws:", " ".join(f"{k}: {v:.2f}" for k, v in enumerate(norms.tolist())))
assert norms.argmin().item() == 3          # the image already is a 3: the least to change
""")

md(r"""
## 3 · The trade-off, measured

Guidance buys accuracy (does the sample show the requested digit?) with diversity (how different are
two samples of the same digit?), and the Fréchet distance sees both: it rises when the samples stop
covering the real distribution. Each column, for plain CFG on the shipped model with DDIM (50 steps):

- **FD / floor**: Fréchet distance to the held-out digits in the shipped classifier's features, over
  the same distance for real training digits at the same $n$ (notebook 06);
- **accuracy**: the share the classifier reads as the requested digit;
- **diversity**: the mean feature distance between two samples of the same requested digit, over the
  same number for held-out digits (1 = as varied as real digits). At $w = 0$ the samples ignore their
  label, so "same requested digit" mixes digits and the number is large.

Measured on an H200 (2026-12-02, `benchmarks/guidance_sweep.py`, $n = 1{,}000$, 100 per digit, mean of
3 draws; `benchmarks/RESULTS.md`):

| $w$ | 0 | 1 | 1.5 | 2 | 3 | 5 | 8 |
|---|---|---|---|---|---|---|---|
| FD / floor | 6.25 | **1.02** | 1.54 | 2.19 | 3.41 | 5.66 | 8.99 |
| accuracy | 10.8% | 98.5% | 99.9% | 100% | 100% | 100% | 100% |
| diversity | 2.40 | 0.99 | 0.84 | 0.79 | 0.74 | 0.71 | 0.69 |

The conditional model ($w = 1$) is already at the floor: this model has learned $p(x \mid y)$ well, and
every $w > 1$ costs distribution quality. What it buys is the last 1.5% of accuracy, and samples that
look more "typical": diversity falls from 0.99 to 0.69. That is not the rule everywhere: Ho & Salimans
(2022) found their best FID on ImageNet 64×64 with a little guidance (their $w$ of 0.1 to 0.3, which
is 1.1 to 1.3 here: they write $(1 + w)\varepsilon_c - w\,\varepsilon_u$).

The next cell measures the same thing live, with fewer images in the `smoke` and `default` profiles
(the numbers are then noisier; only `full` uses the protocol above).
""")

code(r"""
SCALES = [0.0, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0]
N = md.by_profile(smoke=20, default=30, full=1000)
STEPS = md.by_profile(smoke=4, default=10, full=50)
DRAWS = md.by_profile(smoke=1, default=1, full=1)
y_eval = torch.arange(N, device=device) % 10
real = md.mnist("train").images[:N]
floor_fd = md.frechet_distance(real)
real_diversity = md.metrics.within_class_diversity(*md.metrics.reference_images())

def draw(guidance, seed=0, n=N):
    with torch.no_grad():
        return md.ddim_sample(model, s, (n, 1, 28, 28), steps=STEPS, y=y_eval[:n], guidance_scale=guidance,
                              generator=gen(seed)).clamp(-1, 1)

def measure(guidance, draws=DRAWS):
    xs = [draw(guidance, seed=d).cpu() for d in range(draws)]
    labels = y_eval.cpu()
    rows = [dict(fd_ratio=md.frechet_distance(x) / floor_fd, accuracy=md.class_accuracy(x, labels),
                 diversity=md.metrics.within_class_diversity(x, labels) / real_diversity) for x in xs]
    return {key: sum(r[key] for r in rows) / draws for key in rows[0]}, xs[0]

start = time.perf_counter()
table, samples = {}, {}
for w in SCALES:
    table[w], samples[w] = measure(w)
print(f"n = {N}, DDIM {STEPS} steps, {time.perf_counter() - start:.0f} s on {device}")
print(f"{'w':>5s} {'FD/floor':>9s} {'accuracy':>9s} {'diversity':>9s}")
for w, r in table.items():
    print(f"{w:5.1f} {r['fd_ratio']:9.2f} {r['accuracy']:9.1%} {r['diversity']:9.2f}")
""")

code(r"""
assert table[3.0]["accuracy"] >= table[0.0]["accuracy"] + 0.4          # guidance follows the label
assert table[8.0]["diversity"] < table[1.0]["diversity"]               # … and costs diversity
if md.profile() == "full":                                             # the H200 table above, at n = 1,000
    assert table[1.0]["fd_ratio"] <= 1.25 and table[1.5]["accuracy"] >= 0.995, table
    assert table[1.0]["fd_ratio"] < table[2.0]["fd_ratio"] < table[3.0]["fd_ratio"] < table[8.0]["fd_ratio"], table
""")

md(r"""
The same starting noise and labels at every $w$ (the digits in turn), first as one static figure (it is
saved with the notebook), then under a slider (it needs a running kernel; nothing is recomputed when
it moves):
""")

code(r"""
show = slice(0, min(N, 20))
per_row = len(samples[0.0][show])
md.viz.show_grid(torch.cat([samples[w][show] for w in SCALES]),
                 labels=[f"w={w:g}" if i == 0 else "" for w in SCALES for i in range(per_row)], nrow=per_row,
                 title="the same noise and labels (0–9 in turn), guidance scale w = 0, 1, 1.5, 2, 3, 5, 8 (top to bottom)");
""")

code(r"""
md.viz.gallery_slider({f"{w:g}": samples[w][show] for w in SCALES},
                      captions={f"{w:g}": f"accuracy {r['accuracy']:.0%}, FD/floor {r['fd_ratio']:.2f}, "
                                          f"diversity {r['diversity']:.2f}" for w, r in table.items()}, nrow=10)
""")

md(r"""
**Quality against accuracy**, the curve every guidance paper draws (theirs puts FID against Inception
score): moving along it is choosing $w$. On the right the same points against diversity, which
guidance spends.
""")

code(r"""
H200 = {0.0: (6.25, 0.108, 2.40), 1.0: (1.02, 0.985, 0.99), 1.5: (1.54, 0.999, 0.84), 2.0: (2.19, 1.0, 0.79),
        3.0: (3.41, 1.0, 0.74), 5.0: (5.66, 1.0, 0.71), 8.0: (8.99, 1.0, 0.69)}   # (FD/floor, accuracy, diversity): the table
live = {w: (r["fd_ratio"], r["accuracy"], r["diversity"]) for w, r in table.items()}
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
for name, points, style in [("H200, n = 1,000, 50 steps, 3 draws", H200, "o-"), (f"this run, n = {N}, {STEPS} steps", live, "s--")]:
    guided = {w: p for w, p in points.items() if w > 0}              # w = 0 (about 10% accuracy) is far off to the left
    for ax, column in zip(axes, (1, 2)):
        ax.plot([p[column] for p in guided.values()], [p[0] for p in guided.values()], style, label=name)
        for w, p in guided.items():
            ax.annotate(f"w={w:g}", (p[column], p[0]), textcoords="offset points", xytext=(4, 4), fontsize=8)
axes[0].set(xlabel="class accuracy", ylabel="FD / floor", yscale="log", title="quality against accuracy (w ≥ 1)")
axes[1].set(xlabel="within-class diversity (held-out digits = 1)", ylabel="FD / floor", yscale="log",
            title="quality against diversity (w ≥ 1)")
axes[1].invert_xaxis(); axes[0].legend(fontsize=8)
plt.tight_layout()
print(f"w = 0 is off both plots: accuracy {table[0.0]['accuracy']:.0%} here, 10.8% on the H200")
""")

md(r"""
## 4 · When it breaks: deep-fried samples

At large $w$ the strokes get thicker and bolder, with blotches inside them (the 0 at the left of the
$w = 8$ row above), and the sampler's pixel values leave the data range $[-1, 1]$ (the grids are
clipped for display). Why: at every step the sampler forms $\hat x_0$ from the guided prediction, and
$\hat x_0$ is affine in it, so $\hat x_0 = \hat x_0^u + w(\hat x_0^c - \hat x_0^u)$ is extrapolated as
well. Wherever the conditional and unconditional predictions disagree, $w = 8$ moves $\hat x_0$ eight
times as far as the conditional model meant, past $\pm 1$; DDIM then heads for that $\hat x_0$. The next
cell records, along the sampling path, how far $\hat x_0$ overshoots the range on average,
$\mathrm{mean}(\max(|\hat x_0| - 1, 0))$, and its largest value.
""")

code(r"""
class Recorder:
    # a guidance that mixes like ClassifierFree(w) and remembers how far the guided x̂_0 leaves [-1, 1]
    def __init__(self, w):
        self.w, self.t, self.overshoot, self.peak = w, [], [], []

    def __call__(self, cond, uncond, t, x_t):
        out = md.guidance.cfg_mix(cond, uncond, self.w)
        x0 = md.eps_and_x0(out.float(), x_t.float(), t, s, model.target)[1]
        self.t.append(t)
        self.overshoot.append((x0.abs() - 1).clamp(min=0).mean().item())
        self.peak.append(x0.abs().max().item())
        return out

records = {w: Recorder(w) for w in (1.0, 3.0, 8.0)}
for w, rec in records.items():
    with torch.no_grad():
        md.ddim_sample(model, s, (10, 1, 28, 28), steps=STEPS, y=y_eval[:10], guidance_scale=rec, generator=gen(0))
fig, axes = plt.subplots(1, 2, figsize=(12, 3.5))
for w, rec in records.items():
    axes[0].plot(rec.t, rec.overshoot, "o-", label=f"w = {w:g}")
    axes[1].plot(rec.t, rec.peak, "o-", label=f"w = {w:g}")
axes[0].set(xlabel="t (sampling runs right to left)", ylabel="mean overshoot of |x̂₀| past 1", xlim=(1000, -10))
axes[1].set(xlabel="t (sampling runs right to left)", ylabel="max |x̂₀|", xlim=(1000, -10))
axes[1].axhline(1, color="k", ls="--", lw=1); axes[0].legend(); plt.tight_layout()
for w, rec in records.items():
    print(f"w = {w:g}: mean overshoot {sum(rec.overshoot) / len(rec.overshoot):.3f}, peak |x̂₀| {max(rec.peak):.1f}")
assert max(records[8.0].peak) > 2 * max(records[1.0].peak) and sum(records[8.0].overshoot) > 2 * sum(records[1.0].overshoot)
""")

md(r"""
Three fixes, each a small class in `minidiff.guidance` that any sampler takes in place of $w$:

1. **Thresholding $\hat x_0$** (Saharia et al. 2022, Imagen §2.3). *Static*: clip the guided $\hat x_0$ to
   $[-1, 1]$ and rebuild the step's prediction from it. *Dynamic*: per image, let $q$ be the 99.5th
   percentile of $|\hat x_0|$; if $q > 1$, clip to $[-q, q]$ and divide by $q$, shrinking the whole image
   back into range. `Thresholded(w, s, target)` (dynamic) and `Thresholded(w, s, target, None)` (static).
2. **Rescaling** (Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed",
   §3.4): a large $w$ inflates the standard deviation of the guided prediction. Rescale it, per image,
   to the conditional prediction's, and mix: $x_{re} = x_{cfg}\,\sigma(x_c)/\sigma(x_{cfg})$,
   $x = \phi\,x_{re} + (1-\phi)\,x_{cfg}$ with $\phi = 0.7$. `Rescaled(w, phi)`.
3. **A limited interval** (Kynkäänniemi et al. 2024, "Applying guidance in a limited interval improves
   sample and distribution quality in diffusion models"): guidance at high noise mostly removes
   diversity (it decides the digit's overall form), at low noise it does little; apply $w$ only at
   middle noise levels, $w = 1$ elsewhere. They used $\sigma \in (0.28, 5.42]$, with
   $\sigma_t = \sqrt{(1-\bar\alpha_t)/\bar\alpha_t}$; for the linear schedule that is $t \in [t_\text{low}, t_\text{high}]$
   below. `Interval(w, t_low, t_high)`.

### Exercise 3 — rescaled guidance

Implement `rescaled_guidance(cond, uncond, w, phi)` for batches of predictions (B, C, H, W): the
plain mix, rescaled to the conditional prediction's standard deviation **per image**, then mixed with
weight `phi`.
""")

code(r"""
def rescaled_guidance(cond, uncond, w, phi):
    ### BEGIN SOLUTION
    guided = uncond + w * (cond - uncond)
    std = lambda x: x.flatten(1).std(dim=1).view(-1, *[1] * (x.ndim - 1))
    rescaled = guided * std(cond) / std(guided)
    return phi * rescaled + (1 - phi) * guided
    ### END SOLUTION
""")

code(r"""
rescaled_guidance = md.exercises.check_rescaled_guidance(rescaled_guidance)
""")

code(r"""
sigma_t = ((1 - s.alphas_cumprod) / s.alphas_cumprod).sqrt().cpu()
inside = ((sigma_t > 0.28) & (sigma_t <= 5.42)).nonzero().flatten()
t_low, t_high = int(inside[0]), int(inside[-1])
print(f"σ_t ∈ (0.28, 5.42] ⇔ t ∈ [{t_low}, {t_high}] for the linear schedule")

def fixes(w):
    return {"plain": ClassifierFree(w),
            "static clip": Thresholded(w, s, model.target, None),
            "dynamic threshold": Thresholded(w, s, model.target),
            "rescaled φ=0.7": lambda c, u, t, x: rescaled_guidance(c, u, w, 0.7),    # your exercise, as a guidance
            "interval": Interval(w, t_low, t_high)}

W_FIX = md.by_profile(smoke=[5.0], default=[5.0], full=[3.0, 8.0])
fix_table, fix_samples = {}, {}
start = time.perf_counter()
for w in W_FIX:
    for name, guidance in fixes(w).items():
        if name == "plain":                                          # measured above, same noise and labels
            fix_table[(name, w)], fix_samples[(name, w)] = table[w], samples[w]
        else:
            fix_table[(name, w)], fix_samples[(name, w)] = measure(guidance)
print(f"n = {N}, DDIM {STEPS} steps, {time.perf_counter() - start:.0f} s on {device}")
print(f"{'':18s} {'w':>4s} {'FD/floor':>9s} {'accuracy':>9s} {'diversity':>9s}   background")
for (name, w), r in fix_table.items():
    x = fix_samples[(name, w)]
    dark = x.flatten(1).sort(dim=1).values[:, : x[0].numel() // 2].mean().item()       # the darker half of each image
    print(f"{name:18s} {w:4g} {r['fd_ratio']:9.2f} {r['accuracy']:9.1%} {r['diversity']:9.2f}   {dark:+.2f}")
w0 = W_FIX[-1]
md.viz.show_grid(torch.cat([fix_samples[(name, w0)][:10] for name in fixes(w0)]),
                 labels=[name if i == 0 else "" for name in fixes(w0) for i in range(10)], nrow=10,
                 title=f"w = {w0:g}, the same noise: plain, static clip, dynamic threshold, rescaled, interval (top to bottom)");
""")

md(r"""
The same table on the H200 ($n = 1{,}000$, 3 draws, DDIM 50; FD / floor and accuracy):

| $w$ | plain | static clip | dynamic threshold | rescaled ($\phi = 0.7$) | interval |
|---|---|---|---|---|---|
| 1.5 | 1.54, 99.9% | 1.61, 99.8% | 6.62, 99.6% | 1.66, 99.8% | **1.28, 99.8%** |
| 2 | 2.19, 100% | 2.22, 100% | 13.97, 98.5% | 2.43, 100% | 1.68, 100% |
| 3 | 3.41, 100% | 3.27, 100% | 40.4, 92.1% | 3.86, 100% | 2.45, 100% |
| 5 | 5.66, 100% | 5.08, 100% | 169, 59.3% | 6.40, 100% | 3.76, 100% |
| 8 | 8.99, 100% | 7.68, 100% | 439, 16.4% | 9.96, 100% | 5.23, 100% |

**Reading it.**
- **Interval guidance wins** at every $w$: the best setting with at least 99.5% accuracy is $w = 1.5$
  applied for $t \in [t_\text{low}, t_\text{high}]$, at 1.28× the floor and 99.8% accuracy, against
  1.54× for plain CFG at the same $w$. Guidance at the highest noise levels was mostly spending
  diversity.
- **Dynamic thresholding is harmful on digits**, badly. Its premise is that an overshoot is rare
  and the bulk of the image lies well inside $[-1, 1]$, so dividing by $q$ only tames the outliers.
  MNIST's background *is* the edge of the range: most pixels are $-1$. Dividing the whole $\hat x_0$
  by $q > 1$ at every step lifts the background to grey (the "background" column above: the mean of
  each image's darker half, $-1$ for a clean digit), the classifier sees unfamiliar images, and
  accuracy falls as $w$ grows. It was designed for natural images at high resolution; this is a
  measured reason not to copy a trick without measuring it.
- **Static clipping** removes the out-of-range values without shrinking the image. It changes
  little at small $w$ (1.61× against plain CFG's 1.54× at $w = 1.5$) and helps more as $w$ grows (7.68×
  against 8.99× at $w = 8$), but much less than the interval does: it takes away the overshoot and
  keeps the guidance at high noise that spends the diversity.
- **Rescaling** (with $\phi = 0.7$) was slightly worse than plain CFG at every $w > 1$ here. Lin et
  al. proposed it for models trained with zero terminal SNR, whose guided images come out
  over-exposed; this model was not trained that way, and on its digits the inflated spread of the
  guided prediction is not what goes wrong.
""")

code(r"""
best = Interval(1.5, t_low, t_high)
if md.profile() == "full":                       # issue 14's goal, on the protocol: ≥ 99.5% accuracy at ≤ 1.5× the floor
    r, _ = measure(best, draws=3)
    print(f"interval guidance, w = 1.5, t ∈ [{t_low}, {t_high}]: FD {r['fd_ratio']:.2f}× the floor, accuracy {r['accuracy']:.1%} (3 draws of {N})")
    assert r["accuracy"] >= 0.995 and r["fd_ratio"] <= 1.5, r
    for w in W_FIX:                               # the fixes' ranking, as in the H200 table
        assert fix_table[("interval", w)]["fd_ratio"] < fix_table[("plain", w)]["fd_ratio"], fix_table
        assert fix_table[("dynamic threshold", w)]["fd_ratio"] > fix_table[("plain", w)]["fd_ratio"], fix_table
else:
    r = fix_table[("interval", W_FIX[0])]
    print(f"interval guidance at w = {W_FIX[0]:g} here: FD/floor {r['fd_ratio']:.2f}, accuracy {r['accuracy']:.0%}; "
          f"the goal is checked at n = 1,000 in the full profile")
assert fix_table[("dynamic threshold", W_FIX[-1])]["accuracy"] < fix_table[("plain", W_FIX[-1])]["accuracy"]
""")

md(r"""
## 5 · Beyond a single label: two attributes

The procedural Shapes (32×32 RGB, notebook 03's toy data) come with two labels each: the **shape**
(circle, square, triangle, cross) and the **colour** (eight of them). The shipped `shapes_cond` model
was trained with both labels, each dropped on its own with probability 0.2, and each attribute has its
own null label: it knows $p(x \mid \text{shape}, \text{colour})$, $p(x \mid \text{shape})$,
$p(x \mid \text{colour})$ and $p(x)$. Its conditioning vector is the time embedding plus one row per
attribute, $e = \mathrm{MLP}(\ldots) + E[\text{shape}] + E[\text{colour}]$. Labels are rows
(shape, colour); the null labels are (4, 8).

Attribute accuracy needs no guesswork: the data is procedural, so a sample's colour can be read off
its pixels exactly (`md.metrics.shape_colors`, 100% on real images), and its shape is judged by a
small shipped classifier (100% on 2,000 held-out images).
""")

code(r"""
shapes_model, shapes_s, _ = md.load_diffusion("shapes_cond", device=device)
SHAPE_NAMES, COLOUR_NAMES = md.data.SHAPES, md.data.COLOR_NAMES
print("null labels (shape, colour):", shapes_model.null_label, "| shapes:", SHAPE_NAMES, "| colours:", COLOUR_NAMES)
pairs = md.guidance.labels_in_turn(32, shapes_model.null_label).to(device)    # every (shape, colour) once
SHAPE_STEPS = md.by_profile(smoke=4, default=10, full=50)
with torch.no_grad():
    x_pairs = shapes_model_sample = md.ddim_sample(shapes_model, shapes_s, (32, 3, 32, 32), steps=SHAPE_STEPS, y=pairs,
                                                   guidance_scale=1.5, generator=gen(0)).clamp(-1, 1)
order = pairs[:, 0].argsort(stable=True)                                      # one row per shape
md.viz.show_grid(x_pairs[order].cpu(), nrow=8, labels=[COLOUR_NAMES[c] for c in pairs[order, 1].tolist()],
                 title="every (shape, colour) pair, w = 1.5: rows are circle, square, triangle, cross");
acc = md.metrics.attribute_accuracy(x_pairs, pairs)
print(f"shape right {acc['shape']:.0%}, colour right {acc['color']:.0%}, both {acc['both']:.0%} (32 samples)")
assert acc["both"] >= 0.8
""")

md(r"""
**Composing conditions.** With one term per condition, the guided prediction generalises to
(Liu et al. 2022, "Compositional visual generation with composable diffusion models")

$$
\tilde f(x_t, t) = f(x_t, t, \varnothing) + \sum_k w_k\,\big[f(x_t, t, c_k) - f(x_t, t, \varnothing)\big],
$$

where each $c_k$ may fix only some attributes. Plain CFG is one term with $c_1 = y$. A **negative
weight** steers away from a condition: that is what a "negative prompt" does in text-to-image models.
`Composed(model, terms)` builds it as a model (one batched pass for all $1 + K$ predictions) that the
samplers draw from without labels. Three uses, each measured:
""")

code(r"""
CIRCLE, SQUARE, RED = SHAPE_NAMES.index("circle"), SHAPE_NAMES.index("square"), COLOUR_NAMES.index("red")
n_comp = md.by_profile(smoke=12, default=24, full=512)
recipes = {"circle, any colour": [((CIRCLE, None), 3.0)],
           "red circle": [((CIRCLE, RED), 3.0)],
           "square, not red": [((SQUARE, None), 3.0), ((None, RED), -1.0)],
           "square, any colour": [((SQUARE, None), 3.0)]}
composed = {}
with torch.no_grad():
    for name, terms in recipes.items():
        composed[name] = md.ddim_sample(Composed(shapes_model, terms), shapes_s, (n_comp, 3, 32, 32),
                                        steps=SHAPE_STEPS, generator=gen(1)).clamp(-1, 1)

classifier = md.pretrained.load_classifier(device, name=md.metrics.SHAPES_CLASSIFIER)
def attributes(x):
    return md.metrics.shape_predictions(x, classifier), md.metrics.shape_colors(x)
print(f"{'':20s} {'shape':>8s} {'red':>6s} {'colours used':>13s}   samples per colour ({', '.join(COLOUR_NAMES)})")
stats = {}
for name, x in composed.items():
    shape, colour = attributes(x)
    wanted = CIRCLE if "circle" in name else SQUARE
    stats[name] = dict(shape=(shape == wanted).float().mean().item(), red=(colour == RED).float().mean().item(),
                       colours=len(colour.unique()))
    counts = torch.bincount(colour.clamp(min=0).cpu(), minlength=8).tolist()
    print(f"{name:20s} {stats[name]['shape']:8.0%} {stats[name]['red']:6.0%} {stats[name]['colours']:13d}   {counts}")
md.viz.show_grid(torch.cat([x[:12].cpu() for x in composed.values()]), nrow=12,
                 labels=[name if i == 0 else "" for name in composed for i in range(12)],
                 title="Composed: circle (any colour), red circle, square but not red, square (any colour)");
assert stats["red circle"]["red"] >= 0.8 and stats["red circle"]["shape"] >= 0.8
assert stats["circle, any colour"]["colours"] >= 4                 # the colour was left free
assert stats["square, not red"]["red"] <= stats["square, any colour"]["red"]
""")

md(r"""
Pushing one attribute leaves the other to the model's unconditional choice (circles of many colours);
pushing both pins the sample; and the negative term takes red away from the squares while keeping
them squares. It does more than forbid one colour: it pushes *away* from red, so compare which
colours the squares take with and without it (the counts above), and their size. Measured on the H200 with the recipe's full protocol ($n = 1{,}024$, 32 of every pair, DDIM 50,
3 draws; both attributes right, FD in the shapes classifier's features over its floor): $w = 0$: 3.1%,
9.88×; $w = 1$: 99.9%, 2.24×; $w = 1.5$: 100%, **1.88×**; $w = 2$: 100%, 2.26×; $w = 3$: 100%, 3.81×.
""")

code(r"""
if md.profile() == "full":
    labels_all = md.guidance.labels_in_turn(1024, shapes_model.null_label).to(device)
    with torch.no_grad():
        x = md.ddim_sample(shapes_model, shapes_s, (1024, 3, 32, 32), steps=50, y=labels_all, guidance_scale=1.5,
                           generator=gen(0)).clamp(-1, 1)
    r = md.metrics.evaluate_shapes(x, labels_all)
    print(f"shapes_cond, w = 1.5, n = 1,024: shape {r['shape']:.1%}, colour {r['color']:.1%}, both {r['both']:.1%}, "
          f"FD {r['fd_ratio']:.2f}× the floor")
    assert r["both"] >= 0.995 and r["fd_ratio"] <= 2.5, r
""")

md(r"""
## Common pitfalls

- **Forgetting the null label at training time.** A model trained without label dropout has never seen $\varnothing$: its "unconditional" output is garbage, and so is every guided one. `p_uncond` of 0.1–0.2 is usual.
- **Two forward passes.** Computing $\varepsilon_c$ and $\varepsilon_u$ in two calls gives the same numbers at half the throughput; batch them ($[x_t; x_t]$, $[y; \varnothing]$).
- **Mixing the wrong way round.** $\varepsilon_c + w(\varepsilon_c - \varepsilon_u)$ is guidance with $w + 1$, and makes $w = 0$ conditional; the convention here (and in Ho & Salimans) is $\varepsilon_u + w(\varepsilon_c - \varepsilon_u)$. Some libraries write $(1 + w)\varepsilon_c - w\varepsilon_u$: the same thing with $w$ shifted by one. Check which before copying a "guidance scale".
- **Assuming more guidance is better.** On this model $w = 1$ has the best Fréchet distance; every $w > 1$ trades distribution quality for typicality. Measure the curve for your model.
- **Dividing by $q$ where the background is the data range's edge.** Dynamic thresholding greys out MNIST (section 4). Static clipping or interval guidance do not.
- **Using `Composed` with labels dropped together.** Composing "shape" and "colour" needs a model that has seen each attribute dropped on its own (`drop_labels` drops each column independently).

## Try this next

- Sweep the interval's bounds: is $(0.28, 5.42]$ (chosen for EDM2 on ImageNet) the best for digits? `benchmarks/guidance_sweep.py --variants interval --sigma-interval 0.5,3`.
- Measure the trade-off with DPM-Solver++ (`--sampler dpm++ --steps 20`): does guidance need more steps?
- Retrain the digit model with `p_uncond` = 0.2 or 0.5 (notebook 05's Trainer) and measure how the unconditional half and the guided samples change.
- Guide on colour alone with a negative shape: "anything but a circle, in blue".
""")

nb = {"cells": cells, "metadata": {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
                                   "language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}
for i, c in enumerate(nb["cells"]):
    c["id"] = f"c{i:02d}"
    lines = c["source"].split("\n")
    c["source"] = [l + "\n" for l in lines[:-1]] + [lines[-1]]
with open(sys.argv[1] if len(sys.argv) > 1 else "solutions/07_guidance.ipynb", "w") as f:
    json.dump(nb, f, indent=1, ensure_ascii=False)
    f.write("\n")
