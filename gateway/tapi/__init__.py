"""Line sources speaking TAPI semantics: the TAPI bridge listener and the Asterisk (AMI) client."""
