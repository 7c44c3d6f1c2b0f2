"""DICOM in and out for fracture-screen. Knows nothing about models and never imports torch."""
