"""An example stalesgd model plug-in: a tanh MLP, installed as the model ``tanhmlp``.

``pip install -e examples/plugin_tanh_mlp`` declares the entry point
``tanhmlp = "stalesgd_tanh_mlp:PLUGIN"`` in the group ``stalesgd.models``; from then on
``stalesgd real --problem tanhmlp-synthetic ...`` finds the model without any import.
"""

from stalesgd.problems import ModelPlugin

from .model import TanhMLP, make_tanh_mlp

#: what the entry point names: the factory, its options and the task
PLUGIN = ModelPlugin(factory=make_tanh_mlp, options=("hidden",), task="classification",
                     description="one hidden tanh layer, softmax cross-entropy")

__all__ = ["PLUGIN", "TanhMLP", "make_tanh_mlp"]
