"""Fidelity: do the predicted frames match the real ones?

PSNR and SSIM (scikit-image's ``peak_signal_noise_ratio`` and
``structural_similarity``) of each predicted frame against the frame MuJoCo
renders after the same actions from the same state, against the horizon. The
scored errors are the mean squared error (the quantity PSNR is a log of) and
1 - SSIM, averaged over rollouts and horizon. Identical frames have an infinite
PSNR; curves show it capped at :data:`PSNR_CAP` dB.
"""
from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from embodied.validate.harness import WHO, curve

QUESTION = "do frames match?"
PSNR_CAP = 60.0


def frame_metrics(real: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PSNR (capped), SSIM and MSE/255^2 of (..., h, w, 3) uint8 frame pairs, each (...)."""
    lead = real.shape[:-3]
    r = real.reshape(-1, *real.shape[-3:])
    p = pred.reshape(-1, *pred.shape[-3:])
    psnr, ssim, mse = (np.empty(len(r)) for _ in range(3))
    for i in range(len(r)):
        mse[i] = np.mean((r[i].astype(np.float64) - p[i].astype(np.float64)) ** 2) / 255.0 ** 2
        psnr[i] = PSNR_CAP if mse[i] == 0 else min(PSNR_CAP, peak_signal_noise_ratio(r[i], p[i], data_range=255))
        ssim[i] = structural_similarity(r[i], p[i], channel_axis=-1, data_range=255)
    return psnr.reshape(lead), ssim.reshape(lead), mse.reshape(lead)


def run(h) -> dict:
    main = h.main_rollouts()
    real, horizon = main["real"], main["horizon"]
    metrics, errors, curves, per_rollout = {}, {"mse": {}, "one_minus_ssim": {}}, {}, {}
    curves["psnr_db"] = {"x": list(range(1, horizon + 1)), "ylabel": "PSNR (dB, higher is better)"}
    curves["ssim"] = {"x": list(range(1, horizon + 1)), "ylabel": "SSIM (higher is better)"}
    for who in WHO:
        psnr, ssim, mse = frame_metrics(real, main["pred"][who])
        metrics[who] = {"psnr_db": float(psnr.mean()), "ssim": float(ssim.mean()), "mse": float(mse.mean()),
                        "psnr_db_final": float(psnr[:, -1].mean()), "ssim_final": float(ssim[:, -1].mean())}
        errors["mse"][who] = float(mse.mean())
        errors["one_minus_ssim"][who] = float(1.0 - ssim.mean())
        curves["psnr_db"][who] = curve(psnr)
        curves["ssim"][who] = curve(ssim)
        per_rollout[who] = mse.mean(axis=1)
    order = np.argsort(per_rollout["model"])
    cases = [{"label": label, "seed": main["starts"][i].seed, "error": float(per_rollout["model"][i]),
              "error_name": "MSE", "real": real[i], "pred": main["pred"]["model"][i]}
             for label, i in (("best", order[0]), ("worst", order[-1]))]
    return {"metrics": metrics, "errors": errors, "floors": {"mse": 1e-4, "one_minus_ssim": 1e-3},
            "curves": curves, "cases": cases,
            "settings": {"start_states": len(real), "horizon": horizon, "psnr_cap_db": PSNR_CAP}}
