"""The pipeline's stages, what a job computes: training, flatness, backbones, re-evaluation; imports
`domain` and `core`."""
