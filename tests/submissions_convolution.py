"""Real submissions for lesson 10 (`conv2d`, `conv_transpose2d`, `MNISTCNN`) and lesson 09's
`train_with_schedule`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.functional import conv2d as renamed_library_conv

from catalogues import Entry, buggy, correct

# ============================================================================ conv2d


def _padded(x, padding):
    return F.pad(x, (padding, padding, padding, padding))


def conv2d_kernel_offsets(x, weight, bias=None, stride=1, padding=0):
    """The lesson's solution: one strided slice per kernel position, summed over channels."""
    kernel_h, kernel_w = weight.shape[2:]
    padded = _padded(x, padding)
    out_h = (padded.shape[2] - kernel_h) // stride + 1
    out_w = (padded.shape[3] - kernel_w) // stride + 1
    out = 0
    for i in range(kernel_h):
        for j in range(kernel_w):
            pixels = padded[:, :, i:i + stride * (out_h - 1) + 1:stride,
                            j:j + stride * (out_w - 1) + 1:stride]
            out = out + torch.einsum("nchw,oc->nohw", pixels, weight[:, :, i, j])
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


def conv2d_unfold_matmul(x, weight, bias=None, stride=1, padding=0):
    """im2col: every window a column, then one matrix product."""
    n, _, height, width = x.shape
    c_out, _, kernel_h, kernel_w = weight.shape
    columns = F.unfold(x, (kernel_h, kernel_w), padding=padding, stride=stride)
    out = weight.reshape(c_out, -1) @ columns
    if bias is not None:
        out = out + bias[:, None]
    out_h = (height + 2 * padding - kernel_h) // stride + 1
    out_w = (width + 2 * padding - kernel_w) // stride + 1
    return out.view(n, c_out, out_h, out_w)


def conv2d_tensor_unfold(x, weight, bias=None, stride=1, padding=0):
    """Windows as a view (`Tensor.unfold` twice), contracted with `einsum`."""
    kernel_h, kernel_w = weight.shape[2:]
    windows = _padded(x, padding).unfold(2, kernel_h, stride).unfold(3, kernel_w, stride)
    out = torch.einsum("nchwij,ocij->nohw", windows, weight)
    return out if bias is None else out + bias[None, :, None, None]


def conv2d_pixel_loops(x, weight, bias=None, stride=1, padding=0):
    """The definition, one output pixel at a time, stacked back into a tensor."""
    kernel_h, kernel_w = weight.shape[2:]
    padded = _padded(x, padding)
    rows = []
    for i in range(0, padded.shape[2] - kernel_h + 1, stride):
        row = []
        for j in range(0, padded.shape[3] - kernel_w + 1, stride):
            window = padded[:, None, :, i:i + kernel_h, j:j + kernel_w]   # (N, 1, C, kH, kW)
            row.append((window * weight).sum(dim=(2, 3, 4)))              # (N, C_out)
        rows.append(torch.stack(row, dim=-1))
    out = torch.stack(rows, dim=-2)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def conv2d_stub(x, weight, bias=None, stride=1, padding=0):
    # YOUR CODE HERE
    raise NotImplementedError()


def conv2d_flipped(x, weight, bias=None, stride=1, padding=0):
    """A true convolution, as in signal-processing textbooks."""
    return conv2d_kernel_offsets(x, weight.flip(-2, -1), bias, stride, padding)


def conv2d_no_bias(x, weight, bias=None, stride=1, padding=0):
    return conv2d_kernel_offsets(x, weight, None, stride, padding)


def conv2d_no_padding(x, weight, bias=None, stride=1, padding=0):
    return conv2d_kernel_offsets(x, weight, bias, stride, 0)


def conv2d_no_stride(x, weight, bias=None, stride=1, padding=0):
    return conv2d_kernel_offsets(x, weight, bias, 1, padding)


def conv2d_filled_without_graph(x, weight, bias=None, stride=1, padding=0):
    """Writes each pixel into a preallocated tensor under no_grad: right values, no graph."""
    reference = conv2d_pixel_loops(x.detach(), weight.detach(),
                                   None if bias is None else bias.detach(), stride, padding)
    out = torch.zeros_like(reference)
    with torch.no_grad():
        out[...] = reference
    return out


def conv2d_channels_last(x, weight, bias=None, stride=1, padding=0):
    """(N, H_out, W_out, C_out): the channel axis in the wrong place."""
    return conv2d_kernel_offsets(x, weight, bias, stride, padding).permute(0, 2, 3, 1)


def conv2d_first_channel_only(x, weight, bias=None, stride=1, padding=0):
    """Slides only input channel 0 instead of summing over all input channels."""
    return conv2d_kernel_offsets(x[:, :1], weight[:, :1], bias, stride, padding)


def conv2d_calls_f_conv2d(x, weight, bias=None, stride=1, padding=0):
    return F.conv2d(x, weight, bias, stride, padding)


def conv2d_calls_torch_conv2d(x, weight, bias=None, stride=1, padding=0):
    return torch.conv2d(x, weight, bias, stride, padding)


def conv2d_renamed_library(x, weight, bias=None, stride=1, padding=0):
    """The library's function under another name."""
    return renamed_library_conv(x, weight, bias, stride=stride, padding=padding)


def conv2d_calls_torch_convolution(x, weight, bias=None, stride=1, padding=0):
    return torch.convolution(x, weight, bias, [stride, stride], [padding, padding], [1, 1], False,
                             [0, 0], 1)


def conv2d_through_module(x, weight, bias=None, stride=1, padding=0):
    """An `nn.Conv2d` given the weights, called as a module."""
    layer = nn.Conv2d(weight.shape[1], weight.shape[0], tuple(weight.shape[2:]), stride=stride,
                      padding=padding, bias=bias is not None)
    return torch.func.functional_call(layer, {"weight": weight, "bias": bias}
                                      if bias is not None else {"weight": weight}, (x,))


# ============================================================================ conv_transpose2d


def _cropped(full, padding):
    return full[:, :, padding:full.shape[2] - padding, padding:full.shape[3] - padding]


def transpose_kernel_offsets(x, weight, bias=None, stride=1, padding=0):
    """The lesson's solution: for each kernel position, every input pixel's contribution at once."""
    n, _, height, width = x.shape
    _, c_out, kernel_h, kernel_w = weight.shape
    full = torch.zeros(n, c_out, (height - 1) * stride + kernel_h, (width - 1) * stride + kernel_w)
    for i in range(kernel_h):
        for j in range(kernel_w):
            full[:, :, i:i + stride * (height - 1) + 1:stride,
                 j:j + stride * (width - 1) + 1:stride] += torch.einsum(
                "nchw,co->nohw", x, weight[:, :, i, j])
    out = _cropped(full, padding)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def transpose_pixel_stamps(x, weight, bias=None, stride=1, padding=0):
    """The definition: every input pixel stamps a scaled copy of the kernel, one at a time."""
    n, _, height, width = x.shape
    _, c_out, kernel_h, kernel_w = weight.shape
    full = x.new_zeros(n, c_out, (height - 1) * stride + kernel_h,
                       (width - 1) * stride + kernel_w)
    for i in range(height):
        for j in range(width):
            stamp = torch.einsum("nc,cokl->nokl", x[:, :, i, j], weight)
            full = full + F.pad(stamp, (j * stride, full.shape[3] - j * stride - kernel_w,
                                        i * stride, full.shape[2] - i * stride - kernel_h))
    out = _cropped(full, padding)
    return out if bias is None else out + bias[None, :, None, None]


def transpose_fold(x, weight, bias=None, stride=1, padding=0):
    """Each input pixel's stamp as a column, then `F.fold` adds the overlapping stamps."""
    n, c_in, height, width = x.shape
    _, c_out, kernel_h, kernel_w = weight.shape
    columns = weight.reshape(c_in, -1).T @ x.reshape(n, c_in, -1)  # (N, C_out·kH·kW, H·W)
    size = ((height - 1) * stride + kernel_h, (width - 1) * stride + kernel_w)
    out = _cropped(F.fold(columns, size, (kernel_h, kernel_w), stride=stride), padding)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def transpose_through_conv2d(x, weight, bias=None, stride=1, padding=0):
    """Zeros between the input pixels, a border of k - 1 - padding, then a convolution with the
    flipped kernel, its channel axes swapped."""
    n, c_in, height, width = x.shape
    kernel_h, kernel_w = weight.shape[2:]
    spread = x.new_zeros(n, c_in, (height - 1) * stride + 1, (width - 1) * stride + 1)
    spread[:, :, ::stride, ::stride] = x
    border = (kernel_w - 1, kernel_w - 1, kernel_h - 1, kernel_h - 1)
    out = F.conv2d(F.pad(spread, border), weight.flip(-2, -1).transpose(0, 1), bias)
    return _cropped(out, padding)


def transpose_stub(x, weight, bias=None, stride=1, padding=0):
    # YOUR CODE HERE
    raise NotImplementedError()


def transpose_swapped_layout(x, weight, bias=None, stride=1, padding=0):
    """Reads the weight as `Conv2d`'s (C_out, C_in, kH, kW)."""
    return transpose_kernel_offsets(x, weight.transpose(0, 1), bias, stride, padding)


def transpose_unflipped(x, weight, bias=None, stride=1, padding=0):
    """The zero-insertion route, without flipping the kernel."""
    return transpose_through_conv2d(x, weight.flip(-2, -1), bias, stride, padding)


def transpose_no_bias(x, weight, bias=None, stride=1, padding=0):
    return transpose_kernel_offsets(x, weight, None, stride, padding)


def transpose_not_cropped(x, weight, bias=None, stride=1, padding=0):
    return transpose_kernel_offsets(x, weight, bias, stride, 0)


def transpose_no_stride(x, weight, bias=None, stride=1, padding=0):
    return transpose_kernel_offsets(x, weight, bias, 1, padding)


def transpose_without_graph(x, weight, bias=None, stride=1, padding=0):
    with torch.no_grad():
        return transpose_fold(x, weight, bias, stride, padding)


def transpose_channels_last(x, weight, bias=None, stride=1, padding=0):
    return transpose_kernel_offsets(x, weight, bias, stride, padding).permute(0, 2, 3, 1)


def transpose_first_channel_only(x, weight, bias=None, stride=1, padding=0):
    return transpose_kernel_offsets(x[:, :1], weight[:1], bias, stride, padding)


def transpose_calls_library(x, weight, bias=None, stride=1, padding=0):
    return F.conv_transpose2d(x, weight, bias, stride, padding)


def transpose_through_module(x, weight, bias=None, stride=1, padding=0):
    """An `nn.ConvTranspose2d` given the weights, called as a module."""
    layer = nn.ConvTranspose2d(weight.shape[0], weight.shape[1], tuple(weight.shape[2:]),
                               stride=stride, padding=padding, bias=bias is not None)
    weights = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
    return torch.func.functional_call(layer, weights, (x,))


# ============================================================================ MNISTCNN


class CNNSequential(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Linear(32 * 7 * 7, 10)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class CNNFunctional(nn.Module):
    """Named layers, ReLU and pooling as functions, padding="same", pooling before the ReLU."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding="same")
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding="same")
        self.fc = nn.Linear(1568, 10)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))   # max pooling and ReLU commute
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        return self.fc(torch.flatten(x, start_dim=1))


class CNNLogSoftmax(CNNSequential):
    """log_softmax outputs count as logits."""

    def forward(self, x):
        return F.log_softmax(super().forward(x), dim=1)


class CNNOneSequential(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 7 * 7, 10))

    def forward(self, x):
        return self.net(x)


class CNNStub(nn.Module):
    def __init__(self):
        super().__init__()
        # YOUR CODE HERE
        raise NotImplementedError()


class CNNSoftmax(CNNSequential):
    def forward(self, x):
        return torch.softmax(super().forward(x), dim=1)


class CNNNoReLU(CNNSequential):
    def __init__(self):
        super().__init__()
        self.features[1] = nn.Identity()
        self.features[4] = nn.Identity()


class CNNAveragePooling(CNNSequential):
    def __init__(self):
        super().__init__()
        self.features[2] = nn.AvgPool2d(2)
        self.features[5] = nn.AvgPool2d(2)


class CNNSqueezed(CNNSequential):
    """`squeeze()` drops the batch axis of a batch of one."""

    def forward(self, x):
        return super().forward(x).squeeze()


class CNNWideFirstLayer(nn.Module):
    """32 channels first, then 16: the linear layer's size no longer matches the exercise."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class CNNNoGrad(CNNSequential):
    def forward(self, x):
        with torch.no_grad():
            return super().forward(x)


# ============================================================================ train_with_schedule


def _epoch(model, loader, loss_fn, optimizer, after_batch=None):
    """One epoch, the per-sample mean loss; ``after_batch`` runs after each optimizer step."""
    total, seen = 0.0, 0
    for inputs, targets in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        if after_batch is not None:
            after_batch()
        total += loss.item() * len(inputs)
        seen += len(inputs)
    return total / seen


def schedule_end_of_epoch(model, loader, loss_fn, optimizer, scheduler, epochs):
    model.train()
    losses = []
    for _ in range(epochs):
        total_loss, seen = 0.0, 0
        for inputs, targets in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(inputs)
            seen += len(inputs)
        scheduler.step()
        losses.append(total_loss / seen)
    return losses


def schedule_zero_grad_after_step(model, loader, loss_fn, optimizer, scheduler, epochs):
    """Clears gradients after the step, averages with `len(loader.dataset)`, steps the scheduler
    after recording the loss."""
    losses = []
    for _ in range(epochs):
        model.train()
        total = 0.0
        for inputs, targets in loader:
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
            model.zero_grad()
            total += loss.item() * inputs.shape[0]
        losses.append(total / len(loader.dataset))
        scheduler.step()
    return losses


def schedule_with_helper(model, loader, loss_fn, optimizer, scheduler, epochs):
    """Lesson 06's epoch in a helper, the scheduler stepped between epochs by the caller."""
    model.train()
    history = []
    for _ in range(epochs):
        history.append(_epoch(model, loader, loss_fn, optimizer))
        scheduler.step()
    return history


def schedule_closure(model, loader, loss_fn, optimizer, scheduler, epochs):
    """`optimizer.step(closure)`, as LBFGS requires; returns a tuple."""
    model.train()
    losses = []
    for _ in range(epochs):
        total, seen = 0.0, 0
        for inputs, targets in loader:
            def closure():
                optimizer.zero_grad()
                loss = loss_fn(model(inputs), targets)
                loss.backward()
                return loss
            loss = optimizer.step(closure)
            total += float(loss) * len(targets)
            seen += len(targets)
        scheduler.step()
        losses.append(total / seen)
    return tuple(losses)


def schedule_stub(model, loader, loss_fn, optimizer, scheduler, epochs):
    # YOUR CODE HERE
    raise NotImplementedError()


def schedule_at_epoch_start(model, loader, loss_fn, optimizer, scheduler, epochs):
    model.train()
    losses = []
    for _ in range(epochs):
        scheduler.step()
        losses.append(_epoch(model, loader, loss_fn, optimizer))
    return losses


def schedule_every_batch(model, loader, loss_fn, optimizer, scheduler, epochs):
    model.train()
    return [_epoch(model, loader, loss_fn, optimizer, after_batch=scheduler.step)
            for _ in range(epochs)]


def schedule_never(model, loader, loss_fn, optimizer, scheduler, epochs):
    model.train()
    return [_epoch(model, loader, loss_fn, optimizer) for _ in range(epochs)]


def schedule_twice_per_epoch(model, loader, loss_fn, optimizer, scheduler, epochs):
    """Steps once in the loop body and once more when recording the loss."""
    model.train()
    losses = []
    for _ in range(epochs):
        losses.append(_epoch(model, loader, loss_fn, optimizer))
        scheduler.step()
        scheduler.step()
    return losses


def schedule_skips_last_step(model, loader, loss_fn, optimizer, scheduler, epochs):
    """"No need to step after the last epoch": right rates, but the schedule's state is off."""
    model.train()
    losses = []
    for epoch in range(epochs):
        losses.append(_epoch(model, loader, loss_fn, optimizer))
        if epoch < epochs - 1:
            scheduler.step()
    return losses


def schedule_no_zero_grad(model, loader, loss_fn, optimizer, scheduler, epochs):
    model.train()
    losses = []
    for _ in range(epochs):
        total, seen = 0.0, 0
        for inputs, targets in loader:
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(inputs)
            seen += len(inputs)
        scheduler.step()
        losses.append(total / seen)
    return losses


def schedule_no_train_mode(model, loader, loss_fn, optimizer, scheduler, epochs):
    losses = []
    for _ in range(epochs):
        losses.append(_epoch(model, loader, loss_fn, optimizer))
        scheduler.step()
    return losses


def schedule_mean_of_batch_means(model, loader, loss_fn, optimizer, scheduler, epochs):
    model.train()
    losses = []
    for _ in range(epochs):
        batch_losses = []
        for inputs, targets in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
            batch_losses.append(loss.item())
        scheduler.step()
        losses.append(sum(batch_losses) / len(batch_losses))
    return losses


def schedule_returns_last_loss(model, loader, loss_fn, optimizer, scheduler, epochs):
    """Returns one number, the last epoch's loss, instead of one per epoch."""
    model.train()
    loss = None
    for _ in range(epochs):
        loss = _epoch(model, loader, loss_fn, optimizer)
        scheduler.step()
    return loss


ALL = ...  # the named check and every check after it: grading stopped there
CONV = "conv2d"
CNN = "MNISTCNN"
TRANSPOSE = "conv_transpose2d"
SCHEDULE = "train_with_schedule"

SUBMISSIONS: list[Entry] = [
    # ---- conv2d
    correct(CONV, "kernel_offsets", conv2d_kernel_offsets),
    correct(CONV, "unfold_matmul", conv2d_unfold_matmul),
    correct(CONV, "tensor_unfold", conv2d_tensor_unfold),
    correct(CONV, "pixel_loops", conv2d_pixel_loops),
    buggy(CONV, "stub", conv2d_stub, {"not_implemented"}, ("tensor", ALL), "not done yet"),
    buggy(CONV, "flipped", conv2d_flipped, {"kernel_flipped"}, ("value",),
          "kernel flipped", "true convolution"),
    buggy(CONV, "no_bias", conv2d_no_bias, {"bias_ignored"}, ("value",), "without the bias",
          "bias of shape (4,)"),
    buggy(CONV, "no_padding", conv2d_no_padding, {"wrong_padding"}, ("shape", "value"),
          "padding=0", "padding=1"),
    buggy(CONV, "no_stride", conv2d_no_stride, {"wrong_stride"}, ("shape", "value"),
          "stride=1", "stride=2"),
    buggy(CONV, "filled_without_graph", conv2d_filled_without_graph, {"detached_result"},
          ("gradients",), "`grad_fn` is None"),
    buggy(CONV, "channels_last", conv2d_channels_last, {"wrong_output_shape"},
          ("shape", "value"), "(2, 4, 4, 1)", "(2, 1, 4, 4)"),
    buggy(CONV, "first_channel_only", conv2d_first_channel_only, {"wrong_value"}, ("value",),
          "every input channel", "(2, 3, 7, 6)"),
    buggy(CONV, "F_conv2d", conv2d_calls_f_conv2d, {"library_conv_used"}, ("by_hand",),
          "`aten::convolution`"),
    buggy(CONV, "torch_conv2d", conv2d_calls_torch_conv2d, {"library_conv_used"}, ("by_hand",),
          "`aten::convolution`"),
    buggy(CONV, "renamed_library", conv2d_renamed_library, {"library_conv_used"}, ("by_hand",),
          "`aten::convolution`"),
    buggy(CONV, "torch_convolution", conv2d_calls_torch_convolution, {"library_conv_used"},
          ("by_hand",), "`aten::convolution`"),
    buggy(CONV, "through_module", conv2d_through_module, {"library_conv_used"}, ("by_hand",),
          "`aten::convolution`"),
    # ---- conv_transpose2d
    correct(TRANSPOSE, "kernel_offsets", transpose_kernel_offsets),
    correct(TRANSPOSE, "pixel_stamps", transpose_pixel_stamps),
    correct(TRANSPOSE, "fold", transpose_fold),
    correct(TRANSPOSE, "through_conv2d", transpose_through_conv2d),
    buggy(TRANSPOSE, "stub", transpose_stub, {"not_implemented"}, ("tensor", ALL), "not done yet"),
    buggy(TRANSPOSE, "swapped_layout", transpose_swapped_layout, {"weight_layout_swapped"},
          ("value",), "first two axes swapped", "(C_in, C_out, kH, kW)"),
    buggy(TRANSPOSE, "unflipped", transpose_unflipped, {"kernel_flipped"}, ("value",),
          "`weight.flip(-2, -1)`"),
    buggy(TRANSPOSE, "no_bias", transpose_no_bias, {"bias_ignored"}, ("value",),
          "without the bias"),
    buggy(TRANSPOSE, "not_cropped", transpose_not_cropped, {"padding_not_cropped"},
          ("shape", "value"), "padding=0 (not cropped)"),
    buggy(TRANSPOSE, "no_stride", transpose_no_stride, {"wrong_stride"}, ("shape", "value"),
          "stride=1"),
    buggy(TRANSPOSE, "without_graph", transpose_without_graph, {"detached_result"},
          ("gradients",), "`grad_fn` is None"),
    buggy(TRANSPOSE, "channels_last", transpose_channels_last, {"wrong_output_shape"},
          ("shape", "value", "gradients"), "(2, 7, 7, 2)", "(2, 2, 7, 7)"),
    buggy(TRANSPOSE, "first_channel_only", transpose_first_channel_only, {"wrong_value"},
          ("value",), "every input channel"),
    buggy(TRANSPOSE, "library", transpose_calls_library, {"library_conv_used"}, ("by_hand",),
          "transposed=True"),
    buggy(TRANSPOSE, "through_module", transpose_through_module, {"library_conv_used"},
          ("by_hand",), "transposed=True"),
    # ---- MNISTCNN
    correct(CNN, "sequential", CNNSequential),
    correct(CNN, "functional_same_padding", CNNFunctional),
    correct(CNN, "log_softmax", CNNLogSoftmax),
    correct(CNN, "one_sequential", CNNOneSequential),
    buggy(CNN, "stub", CNNStub, {"not_implemented"}, ("module", ALL), "not done yet"),
    buggy(CNN, "softmax", CNNSoftmax, {"softmax_in_model"}, ("no_softmax",), "sums to 1"),
    buggy(CNN, "no_relu", CNNNoReLU, {"wrong_architecture"}, ("forward",), "without the ReLUs"),
    buggy(CNN, "average_pooling", CNNAveragePooling, {"wrong_architecture"}, ("forward",),
          "`AvgPool2d`"),
    buggy(CNN, "squeezed", CNNSqueezed, {"wrong_output_shape"}, ("runs_on_images",),
          "shape (10,)",
          "(1, 10)"),
    buggy(CNN, "wide_first_layer", CNNWideFirstLayer, {"wrong_architecture"},
          ("parameters", "forward"),
          "(32, 1, 3, 3)", "(16, 1, 3, 3)"),
    buggy(CNN, "no_grad", CNNNoGrad, {"detached_result"}, ("gradients_flow",),
          "`output.grad_fn` is None"),
    buggy(CNN, "instance", CNNSequential(), {"wrong_return_type"}, ("module", ALL),
          "not the class"),
    # ---- train_with_schedule
    correct(SCHEDULE, "end_of_epoch", schedule_end_of_epoch),
    correct(SCHEDULE, "zero_grad_after_step", schedule_zero_grad_after_step),
    correct(SCHEDULE, "epoch_helper", schedule_with_helper),
    correct(SCHEDULE, "closure", schedule_closure),
    buggy(SCHEDULE, "stub", schedule_stub, {"not_implemented"}, ("returns_list", ALL),
          "not done yet"),
    buggy(SCHEDULE, "at_epoch_start", schedule_at_epoch_start, {"scheduler_before_optimizer"},
          ("schedule",), "0.05/0.02 ×3, 0.025/0.01 ×3, 0.0125/0.005 ×3",
          "0.1/0.04 ×3, 0.05/0.02 ×3, 0.025/0.01 ×3"),
    buggy(SCHEDULE, "every_batch", schedule_every_batch, {"scheduler_per_batch"}, ("schedule",),
          "0.1/0.04, 0.05/0.02, 0.025/0.01, 0.0125/0.005", "after every batch"),
    buggy(SCHEDULE, "never", schedule_never, {"scheduler_not_stepped"}, ("schedule",),
          "0.1/0.04 ×9"),
    buggy(SCHEDULE, "twice_per_epoch", schedule_twice_per_epoch, {"wrong_value"}, ("schedule",),
          "called 6 times for 3 epochs"),
    buggy(SCHEDULE, "skips_last_step", schedule_skips_last_step, {"wrong_value"}, ("schedule",),
          "called 2 times for 3 epochs"),
    buggy(SCHEDULE, "no_zero_grad", schedule_no_zero_grad, {"no_zero_grad"}, ("gradients",),
          "accumulate across batches"),
    buggy(SCHEDULE, "no_train_mode", schedule_no_train_mode, {"no_train_mode"}, ("train_mode",),
          "evaluation mode"),
    buggy(SCHEDULE, "mean_of_batch_means", schedule_mean_of_batch_means,
          {"unweighted_batch_average"}, ("mean_loss",), "plain mean of the batch losses"),
    buggy(SCHEDULE, "returns_last_loss", schedule_returns_last_loss, {"history_wrong_shape"},
          ("returns_list", "mean_loss"), "a Python float", "a list of 3 floats"),
]
