"""minidiff.course.viz: grid layout, the fixed gray mapping, figure contents, the sliders and bad input."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import minidiff as md  # noqa: E402
from minidiff.course import viz  # noqa: E402

T = 100


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def s():
    return md.NoiseSchedule.linear(T, beta_start=1e-3, beta_end=0.05)


@pytest.fixture
def x0():
    torch.manual_seed(0)
    return torch.rand(3, 1, 8, 8) * 2 - 1


def images_of(fig: Figure) -> list:
    return [im for ax in fig.axes for im in ax.get_images()]


# -- image_grid ---------------------------------------------------------------------------------
def test_image_grid_puts_every_pixel_in_its_tile():
    images = torch.arange(5 * 2 * 3, dtype=torch.float32).view(5, 1, 2, 3)
    grid = viz.image_grid(images, nrow=3, fill=-7.0)
    assert grid.shape == (2 * 2, 3 * 3, 1)
    for b in range(5):
        r, c = divmod(b, 3)
        torch.testing.assert_close(grid[2 * r:2 * r + 2, 3 * c:3 * c + 3, 0], images[b, 0])
    assert (grid[2:4, 6:9] == -7.0).all()                      # the empty sixth cell


def test_image_grid_pads_between_tiles_only_and_keeps_channels():
    images = torch.rand(4, 3, 2, 2)
    grid = viz.image_grid(images, nrow=2, pad=1, fill=0.5)
    assert grid.shape == (2 * 3 - 1, 2 * 3 - 1, 3)
    torch.testing.assert_close(grid[3:5, 3:5], images[3].permute(1, 2, 0))
    assert (grid[2, :] == 0.5).all() and (grid[:, 2] == 0.5).all()


def test_image_grid_is_square_by_default():
    assert viz.image_grid(torch.zeros(9, 1, 4, 4)).shape == (12, 12, 1)
    assert viz.image_grid(torch.zeros(3, 1, 4, 4), nrow=10).shape == (4, 12, 1)   # nrow > B: one row


# -- show_grid ----------------------------------------------------------------------------------
def test_show_grid_gray_is_fixed_not_autoscaled():
    x = torch.tensor([-1.0, 0.0, 1.0, 3.0]).view(1, 1, 1, 4)          # 3.0: a noisy pixel, clamped
    fig = viz.show_grid(x)
    (im,) = images_of(fig)
    assert im.get_clim() == (0.0, 1.0) and im.get_cmap().name == "gray"
    torch.testing.assert_close(torch.as_tensor(im.get_array()), torch.tensor([[0.0, 0.5, 1.0, 1.0]]))


def test_show_grid_rgb_and_labels():
    fig = viz.show_grid(torch.zeros(5, 3, 4, 4).requires_grad_(), labels=[0, 1, "two", 3, 4], nrow=3)
    assert isinstance(fig, Figure) and len(fig.axes) == 6                # 2 × 3, last cell blank
    assert len(images_of(fig)) == 5
    assert images_of(fig)[0].get_array().shape == (4, 4, 3)
    assert [ax.get_title() for ax in fig.axes[:5]] == ["0", "1", "two", "3", "4"]
    fig = viz.show_grid(torch.zeros(2, 1, 4, 4), labels=torch.tensor([7, 3]))     # class indices as a tensor
    assert [ax.get_title() for ax in fig.axes] == ["7", "3"]


# -- static figures of the forward process ------------------------------------------------------
def test_forward_strip_columns_share_one_noise(s, x0):
    noise = torch.randn_like(x0)
    ts = (0, 10, 99)
    fig = viz.show_forward_strip(x0, s, ts=ts, noise=noise)
    assert len(fig.axes) == 3 * 3 and len(images_of(fig)) == 9
    assert fig.axes[0].get_title().startswith("t = 1\n") and "√ᾱ = " in fig.axes[2].get_title()
    # axes run row by row: row 1 (second image), column 2 (position 99)
    expected = md.to_pixel_range(md.q_sample(x0, 99, s, noise))[1, 0]
    torch.testing.assert_close(torch.as_tensor(fig.axes[3 + 2].get_images()[0].get_array()), expected)


def test_default_ts_fit_the_schedule(s, x0):
    assert viz._default_ts(1000) == (0, 49, 99, 249, 499, 749, 999)      # steps 1, 50, …, 1000
    assert viz._default_ts(3) == (0, 1, 2)
    fig = viz.show_forward_strip(x0[:1], s)
    assert [ax.get_title().split("\n")[0] for ax in fig.axes] == ["t = 1", "t = 5", "t = 10", "t = 25", "t = 50",
                                                                   "t = 75", "t = 100"]


# -- labels: the image labelled "t = k" is the one after k forward steps ------------------------------
def test_step_label_names_the_number_of_steps():
    assert viz.step_label(0) == "t = 0" and viz.step_label(1000) == "t = 1000"


def test_forward_strip_column_labelled_t_k_is_x_after_k_steps(s, x0):
    """q_sample at position k − 1 has the distribution of k chain steps (same ε here: compare the formula)."""
    noise = torch.randn_like(x0)
    fig = viz.show_forward_strip(x0[:1], s, ts=(0, 9, 99), noise=noise[:1])
    for ax in fig.axes:
        k = int(ax.get_title().split("\n")[0].removeprefix("t = "))
        abar_k = torch.prod(1 - s.betas[:k])                               # ᾱ_k = ∏_{s=1}^{k} α_s
        expected = abar_k.sqrt() * x0[:1] + (1 - abar_k).sqrt() * noise[:1]
        torch.testing.assert_close(torch.as_tensor(ax.get_images()[0].get_array()),
                                   md.to_pixel_range(expected.float())[0, 0])
        assert f"√ᾱ = {abar_k.sqrt().item():.2f}" in ax.get_title()


def test_trajectory_column_labelled_t_k_is_the_chain_after_k_steps(s, x0):
    steps = [0, 1, 7, 100]
    noise = torch.randn(T, *x0.shape)
    trajectory = md.q_chain(x0, s, steps, noise)
    fig = viz.show_trajectory(trajectory, steps, row_labels=["a", "b", "c"])
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:4] == ["t = 0", "t = 1", "t = 7", "t = 100"] and not any(titles[4:])   # once per column
    assert [ax.get_ylabel() for ax in fig.axes[::4]] == ["a", "b", "c"]                   # once per row
    for col, title in enumerate(titles[:4]):
        k, x = int(title.removeprefix("t = ")), x0
        for i in range(k):                                                  # k applications of q_step
            x = md.q_step(x, i, s, noise[i])
        for row in range(3):
            shown = torch.as_tensor(fig.axes[row * 4 + col].get_images()[0].get_array())
            torch.testing.assert_close(shown, md.to_pixel_range(x)[row, 0])
    with pytest.raises(ValueError, match="steps must have one entry per recorded image"):
        viz.show_trajectory(trajectory, steps[:3])
    with pytest.raises(ValueError, match=r"trajectory must have shape \(len\(steps\), B, C, H, W\)"):
        viz.show_trajectory(trajectory[0], steps)


def test_t_slider_image_labelled_t_k_is_x_after_k_steps(s, x0):
    noise = torch.randn_like(x0)
    slider, image, caption = viz.t_slider(x0, s, noise=noise, zoom=1).children
    assert (slider.min, slider.value, slider.max) == (0, 0, T)
    assert caption.value.startswith("t = 0 · x_0")
    assert image.value == viz.png_bytes(x0, nrow=3, zoom=1)                  # t = 0: the clean images
    for k in (1, 37, T):
        slider.value = k
        assert caption.value.startswith(f"t = {k} · ᾱ_t = {torch.prod(1 - s.betas[:k]).item():.4f} · ")
        assert image.value == viz.png_bytes(md.q_sample(x0, k - 1, s, noise), nrow=3, zoom=1)


def test_plot_schedules_one_line_per_schedule_per_panel():
    schedules = {"linear": md.NoiseSchedule.linear(50), "cosine": md.NoiseSchedule.cosine(50)}
    fig = viz.plot_schedules(schedules)
    assert len(fig.axes) == 3
    assert all(len(ax.get_lines()) == 2 for ax in fig.axes)
    assert fig.axes[0].get_yscale() == "log"
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ["linear", "cosine"]
    assert fig.axes[0].get_lines()[0].get_xdata()[[0, -1]].tolist() == [1, 50]     # step numbers t = 1 … T
    fig.canvas.draw()
    labels = {t.get_text() for t in fig.axes[0].get_yticklabels()} - {""}
    assert labels and labels <= {"10⁻⁵", "10⁻⁴", "10⁻³", "10⁻²", "10⁻¹", "1", "10¹"} and "10⁻²" in labels, labels
    assert (viz._power_of_ten(1e-3, 0) == "10⁻³" and viz._power_of_ten(3e-3, 0) == ""
            and viz._power_of_ten(1.0, 0) == "1")


def test_histograms(s, x0):
    fig = viz.plot_histogram(torch.randn(1000), title="noise")
    assert len(fig.axes) == 1 and len(fig.axes[0].patches) == 60
    fig = viz.plot_histograms_over_t(x0, s, ts=(0, 20, 40, 60, 99))
    visible = [ax for ax in fig.axes if ax.axison]
    assert len(visible) == 5 and all(len(ax.get_lines()) == 1 for ax in visible)   # the N(0, 1) curve


def test_schedule_comparison_rows_are_schedules(x0):
    schedules = {"linear": md.NoiseSchedule.linear(T), "cosine": md.NoiseSchedule.cosine(T)}
    fig = viz.show_schedule_comparison(schedules, x0[:2], ts=(0, 50, 99))
    assert len(fig.axes) == 6 and len(images_of(fig)) == 6
    assert fig.axes[0].get_ylabel() == "linear" and fig.axes[3].get_ylabel() == "cosine"
    assert [ax.get_title() for ax in fig.axes[:3]] == ["t = 1", "t = 51", "t = 100"]    # positions 0, 50, 99


# -- widgets ------------------------------------------------------------------------------------
def test_t_slider_redraws_the_image(s, x0):
    slider, image, caption = viz.t_slider(x0, s).children
    assert slider.max == T and image.value[:8] == b"\x89PNG\r\n\x1a\n"
    before, text = image.value, caption.value
    slider.value = 50
    assert image.value != before and caption.value != text and caption.value.startswith("t = 50 · ")
    assert "  " not in caption.value                # HTML collapses runs of spaces: separators instead


def test_t_slider_t_max(s, x0):
    assert viz.t_slider(x0, s, t_max=20).children[0].max == 20
    assert viz.t_slider(x0, s, t_max=T).children[0].max == T
    with pytest.raises(ValueError, match=r"t_max must be a step number in \[0, 100\]"):
        viz.t_slider(x0, s, t_max=T + 1)


def test_schedule_compare_widget_redraws_every_panel(x0):
    schedules = {"linear": md.NoiseSchedule.linear(T), "cosine": md.NoiseSchedule.cosine(T)}
    slider, row = viz.schedule_compare_widget(schedules, x0).children
    assert len(row.children) == 2
    assert (slider.min, slider.max, slider.value) == (1, T, 1)                      # step numbers
    before = [panel.children[1].value for panel in row.children]
    slider.value = 60
    assert all(panel.children[1].value != b for panel, b in zip(row.children, before))
    linear = schedules["linear"]
    assert f"√ᾱ_t = {linear.sqrt_alphas_cumprod[59].item():.3f}" in row.children[0].children[2].value   # step 60
    with pytest.raises(ValueError, match="same number of steps"):
        viz.schedule_compare_widget({"a": md.NoiseSchedule.linear(10), "b": md.NoiseSchedule.linear(20)}, x0)


def test_gallery_slider_shows_each_keys_images_and_caption(x0):
    grids = {0.0: x0, 1.5: -x0}
    slider, image, caption = viz.gallery_slider(grids, captions={1.5: "accuracy 99%"}).children
    assert list(slider.options) == ["0.0", "1.5"] and image.value[:8] == b"\x89PNG\r\n\x1a\n"
    before = image.value
    slider.value = "1.5"
    assert image.value != before and caption.value == "w = 1.5 · accuracy 99%" and "  " not in caption.value
    with pytest.raises(ValueError, match="at least one batch"):
        viz.gallery_slider({})


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("images, error, match", [
    (torch.zeros(1, 8, 8), ValueError, r"4-D \(B, C, H, W\).*images\[None\]"),
    (torch.zeros(2, 2, 8, 8), ValueError, "C=2"),
    (torch.zeros(2, 1, 8, 8, dtype=torch.uint8), TypeError, "float.*uint8"),
    ([[0.0]], TypeError, "torch.Tensor"),
])
def test_bad_images_say_what_is_wrong(images, error, match):
    with pytest.raises(error, match=match):
        viz.show_grid(images)


def test_bad_arguments_are_named(s, x0):
    with pytest.raises(ValueError, match=r"ts must be in \[0, 99\] \(positions of steps 1 … 100\).*\[100\]"):
        viz.show_forward_strip(x0, s, ts=(0, 100))
    with pytest.raises(ValueError, match="labels"):
        viz.show_grid(x0, labels=[1, 2])
    with pytest.raises(ValueError, match="nrow"):
        viz.image_grid(x0, nrow=0)
    with pytest.raises(ValueError, match="noise must have the shape of x0"):
        viz.plot_histograms_over_t(x0, s, noise=torch.randn(1, 1, 8, 8))
    with pytest.raises(TypeError, match="schedule must be a minidiff.NoiseSchedule"):
        viz.t_slider(x0, "linear")
    with pytest.raises(TypeError, match="schedules must be a dict"):
        viz.plot_schedules([s])


def test_grid_labels_stay_readable_as_shown(tmp_path):
    """Issue 31: a wide grid's labels (notebook 07's w=…, 20 images a row) were ~5 px on the screen. A grid is at most
    GRID_WIDTH inches (its PNG ≤ ~750 px at the inline backend's 100 dpi, shown unscaled in JupyterLab and on the
    site), its labels ≥ 9 pt; labels that name rows are written to the left of their row."""
    from PIL import Image
    scales = (0, 1, 1.5, 2, 3, 5, 8)
    labels = [f"w={w:g}" if i == 0 else "" for w in scales for i in range(20)]
    assert viz.row_label_texts(labels, 20) == [f"w={w:g}" for w in scales]
    assert viz.row_label_texts([0, 1, "two", 3], 2) is None and viz.row_label_texts(["a", "b"], 1) is None
    fig = viz.show_grid(torch.zeros(140, 1, 4, 4), labels=labels, nrow=20, title="a title " * 20)
    assert [ax.get_ylabel() for ax in fig.axes[::20]] == [f"w={w:g}" for w in scales]
    assert all(ax.get_title() == "" for ax in fig.axes)
    assert fig.axes[0].yaxis.label.get_fontsize() >= 9
    fig.savefig(tmp_path / "grid.png", dpi=100, bbox_inches="tight")
    assert Image.open(tmp_path / "grid.png").size[0] <= 100 * viz.GRID_WIDTH + 20
    fig = viz.show_grid(torch.zeros(16, 1, 4, 4), labels=list(range(16)), nrow=8)      # a label above each image
    assert fig.get_figwidth() <= viz.GRID_WIDTH and fig.axes[0].title.get_fontsize() >= 9
