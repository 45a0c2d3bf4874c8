"""Cards for the door: a DESFire EV2-subset card model, virtual cards on vsmartcard's vpcd,
and the card personalizer."""
