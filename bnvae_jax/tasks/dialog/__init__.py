"""Dialog CVAEs (Zhao et al. 2017) and BN-CVAE (Zhu et al. 2020, §4)."""
