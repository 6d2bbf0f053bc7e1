"""User commands beyond `run`: a run's status, the weak-vs-full report and gallery, prediction on new images,
export, and loading a run's trained network (`trained`)."""
