"""Population-based training of a toy model: bottom trials copy the checkpoint of a
top trial (exploit) and continue with a perturbed learning rate (explore).

    python examples/tune_pbt.py
"""

import json
import os
import tempfile

import miniray
from miniray import tune
from miniray.tune.schedulers import PopulationBasedTraining


def train(config):
    # Gradient descent on f(w) = (w - 10)^2 from w = 0; "accuracy" is -f(w). A good lr
    # converges in a few steps; a tiny one crawls, until PBT hands it a better state.
    w = 0.0
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with open(os.path.join(checkpoint.path, "state.json")) as f:
            w = json.load(f)["w"]
    scratch = os.path.join(tune.get_context().get_trial_dir(), "scratch")
    os.makedirs(scratch, exist_ok=True)
    while True:
        import time

        time.sleep(0.02)
        w -= config["lr"] * 2 * (w - 10)
        with open(os.path.join(scratch, "state.json"), "w") as f:
            json.dump({"w": w}, f)
        tune.report({"score": -(w - 10) ** 2, "lr": config["lr"]},
                    checkpoint=tune.Checkpoint.from_directory(scratch))


def main():
    miniray.init()
    pbt = PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=4,
                                  hyperparam_mutations={"lr": tune.loguniform(1e-4, 0.5)},
                                  quantile_fraction=0.5, seed=0)
    with tempfile.TemporaryDirectory() as storage:
        results = tune.Tuner(
            train, param_space={"lr": tune.grid_search([0.0005, 0.001, 0.005, 0.2])},
            tune_config=tune.TuneConfig(metric="score", mode="max", scheduler=pbt),
            run_config=tune.RunConfig(storage_path=storage, name="pbt", verbose=0,
                                      stop={"training_iteration": 24},
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=2)),
        ).fit()
        for r in results:
            print(f"trial {r.metrics['trial_id']}: final lr {r.config['lr']:.4g}, "
                  f"score {r.metrics['score']:.4g}")
    print(f"{pbt.num_perturbations} exploit/explore steps")
    for t, loser, donor, config in pbt.exploits[:5]:
        print(f"  iteration {t}: {loser} took {donor}'s checkpoint, lr -> {config['lr']:.4g}")
    assert pbt.num_perturbations > 0
    miniray.shutdown()


if __name__ == "__main__":
    main()
