"""What is trained: text VAEs, dialog CVAEs, the classifier and the lagging study."""
