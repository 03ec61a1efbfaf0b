"""Callbacks for the trainers people already use; each needs its optional extra installed.

pip install 'gridwise[trainer-hf]'          -> gridwise_trainer.integrations.hf_callback
pip install 'gridwise[trainer-lightning]'   -> gridwise_trainer.integrations.lightning_callback
"""
