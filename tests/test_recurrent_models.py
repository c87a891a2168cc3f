"""RNNRegressor / LSTMRegressor: shapes, and an LSTM that learns the sunspot cycle."""
import numpy as np
import pytest
import torch

import pynn.data
import pynn.models


@pytest.mark.parametrize("cls", [pynn.models.RNNRegressor, pynn.models.LSTMRegressor])
def test_regressor_shapes_and_gradients(cls, device):
    m = cls(3, 8, num_layers=2, out_features=2, bidirectional=True, device=device)
    x = torch.randn(5, 7, 3, device=device, requires_grad=True)
    y = m(x)
    assert y.shape == (5, 2)
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert m(torch.randn(4, 7, device=device)[..., None].expand(4, 7, 3).contiguous()).shape == (4, 2)
    with pytest.raises(ValueError, match="expected input"):
        m(torch.randn(7, device=device))


def test_lstm_regressor_beats_naive_forecast_on_sunspots():
    """Yearly sunspots 1700-2008, windows of 12 years -> next year; first 80% of the years train,
    the rest validate (time order kept). The naive forecast repeats the window's last value."""
    torch.manual_seed(0)
    s = pynn.data.load("sunspots")["sunspots"].to_numpy(np.float32)
    window, n_train = 12, int(len(s) * 0.8)
    mu, sd = s[:n_train].mean(), s[:n_train].std()  # statistics of the training years only
    z = (s - mu) / sd
    x = np.stack([z[i:i + window] for i in range(len(z) - window)])
    y = z[window:]
    split = n_train - window  # every target of the training windows is a training year
    x_tr, y_tr, x_va, y_va = map(torch.from_numpy, (x[:split], y[:split], x[split:], y[split:]))
    model = pynn.models.LSTMRegressor(1, 24)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x_tr).squeeze(-1), y_tr)
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = model(x_va).squeeze(-1).numpy() * sd + mu
    truth = y_va.numpy() * sd + mu
    naive = x_va[:, -1].numpy() * sd + mu
    rmse = float(np.sqrt(np.mean((pred - truth) ** 2)))
    naive_rmse = float(np.sqrt(np.mean((naive - truth) ** 2)))
    print(f"sunspots validation RMSE: LSTMRegressor {rmse:.2f}, naive last value {naive_rmse:.2f}")
    assert rmse < 0.8 * naive_rmse
