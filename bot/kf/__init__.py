"""WeChat Customer Service (kf): pulling messages with sync_msg, reply windows, keywords, statistics."""

KF_WAKE_CHANNEL = "kf"
