"""Evaluation: how good a week's lists are.

``evaluation`` is the entry point (``evaluate_week``); ``metrics`` holds MAP@12 and recall,
``baselines`` the lists to beat, ``quality_checks`` the asset checks' logic, ``ablation`` the
``python -m hm_assets.pipeline.evaluation.ablation`` tool.
"""
