"""The detector in the browser: the static folder (`build`, `python -m helpers web`) and its parity
with the Lambda handler, measured in Chromium (`parity`)."""
