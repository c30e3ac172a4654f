"""Lightning callbacks of a training run: which checkpoint is kept, when to validate, what is printed."""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import Callback, ModelCheckpoint


class BestCheckpoint(ModelCheckpoint):
    """Keeps one checkpoint, the best by `monitor`; on a tie the later epoch wins. Lightning keeps
    the earlier one, so an untrained epoch 0 would win every all-zero tie of a weak first run."""

    def check_monitor_top_k(self, trainer, current=None) -> bool:
        if current is None:
            return False
        if not self.best_k_models:
            return True
        best = self.best_k_models[self.kth_best_model_path]
        return bool(current >= best if self.mode == "max" else current <= best)


class EpochReport(Callback):
    """One printed line per epoch (a notebook has no terminal for a progress bar)."""

    def on_train_epoch_start(self, trainer, module):
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):  # after this epoch's validation
        if not trainer.is_global_zero:
            return
        logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
        figures = [
            f"{name} {logged[key]:.3f}"
            for key, name in (
                ("train/loss_epoch", "loss"),
                ("val_real/map", "real mAP"),
                ("val_real/map_50", "real mAP@.5"),
            )
            if key in logged
        ]
        seconds = time.perf_counter() - self.started
        print(
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: {', '.join(figures)} ({seconds:.0f} s)",
            flush=True,
        )


class ValidateFromMiddleEpoch(Callback):
    """Validate (and so choose the checkpoint) only from the middle epoch on: under the warm-up and the
    cosine decay an early epoch does not win. Each skipped validation saves a forward pass over every
    unseen image; training is not touched (the validation loader draws from its own generator)."""

    def on_train_epoch_start(self, trainer, module):
        validate = trainer.current_epoch >= trainer.max_epochs // 2
        trainer.check_val_every_n_epoch = 1 if validate else trainer.max_epochs + 1  # read per epoch by Lightning
