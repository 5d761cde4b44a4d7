"""Training labels (Olney et al. 2020, §2.2–2.4): Payne, photometric M-dwarf and YSO labels,
combined into one catalog with splits and the Table 1 normalisation."""
