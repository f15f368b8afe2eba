"""Deploy an exported artifact with the torch-free runtime: the MuJoCo task as a stand-in robot, or a user's
controller through callbacks."""
