"""SRM/CRM segmentation network and backbones."""
