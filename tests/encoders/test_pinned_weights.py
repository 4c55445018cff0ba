"""Training is bit-for-bit stable: a few weights of one-epoch digits fine-tunes, pinned.

The values were recorded from the code before training's copies of the smoothing library (the
soft smoothed loss, SmoothAdv's attack, the eval-mode switch, the speed options) were merged into
the certify library: the same seed must still give exactly these weights under Gaussian training
(Cohen et al. 2019), SmoothAdv (Salman et al. 2019), consistency regularisation (Jeong and Shin
2020) and MACER (Zhai et al. 2020).
"""

from __future__ import annotations

import pytest
import torch

import encoders
from encoders.finetune import FinetuneConfig, finetune
from encoders.recipes import ConsistencyRecipe, GaussianRecipe, MacerRecipe, SmoothAdvRecipe

PINNED: dict[str, dict[str, list[float]]] = {
    "gaussian": {
        "encoder.0.weight": [
            -0.004774019122123718, 0.17587639391422272,
            -0.2757454514503479, -0.2455139309167862,
        ],
        "encoder.1.running_var": [
            0.6709362864494324, 0.7139069437980652,
            0.7495558261871338, 0.8383316397666931,
        ],
        "encoder.5.bias": [
            0.002190592000260949, -0.002687733620405197,
            0.0018029488855972886, -0.0022924405056983232,
        ],
        "encoder.5.weight": [
            0.997175931930542, 1.0017012357711792,
            1.000961422920227, 1.001892328262329,
        ],
        "encoder.9.running_mean": [
            0.02896132506430149, -0.11440031230449677,
            0.15878356993198395, -0.047581613063812256,
        ],
        "head.bias": [
            0.052891653031110764, 0.024930285289883614,
            0.030483825132250786, 0.01083952747285366,
        ],
    },
    "smoothadv": {
        "encoder.0.weight": [
            -0.005424970760941505, 0.17643515765666962,
            -0.2754013240337372, -0.24540388584136963,
        ],
        "encoder.1.running_var": [
            0.6692062020301819, 0.7096027731895447,
            0.7436559200286865, 0.8309267163276672,
        ],
        "encoder.5.bias": [
            0.0018489413196220994, 0.002497406443580985,
            0.0022760697174817324, -0.002538190921768546,
        ],
        "encoder.5.weight": [
            0.997342050075531, 1.0027121305465698,
            1.0016480684280396, 0.997066080570221,
        ],
        "encoder.9.running_mean": [
            0.0006900553125888109, -0.08419722318649292,
            0.15489643812179565, -0.0586739107966423,
        ],
        "head.bias": [
            0.05289246514439583, 0.024931833148002625,
            0.03035821206867695, 0.01089837122708559,
        ],
    },
    "consistency": {
        "encoder.0.weight": [
            -0.005431705620139837, 0.17606936395168304,
            -0.2749660015106201, -0.24811983108520508,
        ],
        "encoder.1.running_var": [
            0.6714133620262146, 0.7146660685539246,
            0.7502506375312805, 0.8389020562171936,
        ],
        "encoder.5.bias": [
            0.0021969967056065798, 0.0027663230430334806,
            0.0021547696087509394, -0.002852325327694416,
        ],
        "encoder.5.weight": [
            0.9995614886283875, 1.002530813217163,
            1.0017037391662598, 0.9970067143440247,
        ],
        "encoder.9.running_mean": [
            0.0073194196447730064, -0.09293581545352936,
            0.14977091550827026, -0.05874740332365036,
        ],
        "head.bias": [
            0.053002696484327316, 0.024661580100655556,
            0.029645809903740883, 0.010908340103924274,
        ],
    },
    "macer": {
        "encoder.0.weight": [
            -0.005436556879431009, 0.17606797814369202,
            -0.27535927295684814, -0.24436788260936737,
        ],
        "encoder.1.running_var": [
            0.6710043549537659, 0.7147468328475952,
            0.7495383024215698, 0.840230405330658,
        ],
        "encoder.5.bias": [
            -0.0021462072618305683, -0.0012006090255454183,
            0.0027612349949777126, -0.002209794707596302,
        ],
        "encoder.5.weight": [
            0.9973865151405334, 1.0021538734436035,
            1.0025118589401245, 0.9982126951217651,
        ],
        "encoder.9.running_mean": [
            0.02772412821650505, -0.1022416353225708,
            0.14919623732566833, -0.04832299053668976,
        ],
        "head.bias": [
            0.05305420607328415, 0.024936359375715256,
            0.027056150138378143, 0.011909810826182365,
        ],
    },
}


@pytest.mark.parametrize("name,recipe", [
    ("gaussian", GaussianRecipe()),
    ("smoothadv", SmoothAdvRecipe(noise_copies=2, epsilon=0.5, attack_steps=2, warmup_epochs=2)),
    ("consistency", ConsistencyRecipe(noise_copies=2)),
    ("macer", MacerRecipe(noise_copies=2)),
])
def test_a_seeded_finetune_gives_the_pinned_weights(tmp_path, name, recipe):
    config = FinetuneConfig(sigma=0.25, out=str(tmp_path / "pinned.pt"), epochs=1, batch_size=256,
                            device="cpu", recipe=recipe)
    finetune(config)
    state = encoders.load_classifier(tmp_path / "pinned.pt").state_dict()
    for key, values in PINNED[name].items():
        expected = torch.tensor(values, dtype=state[key].dtype)
        assert torch.equal(state[key].flatten()[:4], expected), key
