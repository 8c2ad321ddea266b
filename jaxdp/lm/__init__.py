"""Language-model fine-tuning: pretrained weights, chat data, attacks."""
