"""The TAPI bridge line source: JSON lines from a Windows TAPI program over TCP."""
