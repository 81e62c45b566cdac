"""Analysis of trained models: log-likelihoods, latent sources, ELBO surgery, figures, reports."""
