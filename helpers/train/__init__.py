"""Training, by job: `config` (TrainConfig, its fingerprint, the model choice), `data` (the Dataset,
collate, the prepared split, the loaders), `module` (the LightningModule, its optimizer groups and
schedule, checkpoint reload), `callbacks`, `threshold` (eager predictions, the served threshold),
`summary` (RunSummary: summary.json), `run` (train(), the dry run, the CLI); the detectors in
`models`, `backbones`, `transforms` and `roi_align_grad`."""
