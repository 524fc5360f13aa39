"""Generated protobuf code for the Signal protocol messages (see ``regenerate``)."""
