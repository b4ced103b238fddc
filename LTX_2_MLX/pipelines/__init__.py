"""Generation pipelines; all run the shared loop in `pipelines.denoising`."""
