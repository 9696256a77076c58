"""Send-time optimization: each user's send at the local hour they are most likely to engage."""
