# The assignment's producer client, unchanged (the message literal, broken across two lines
# in the assignment's PDF, is on one line), plus the call that runs it.
from myqueue import MyProducer

def produce():
    producer = MyProducer(
        topics=['topic1', 'topic2'],
        broker='localhost:9092')
    try:
        while producer.can_send():
            # Produce message and wait for it to be sent
            producer.send("my_topic", b"DEBUG: This is a log message!")
    finally:
        # Wait for all messages to be delivered or expire
        producer.stop()


if __name__ == "__main__":
    try:
        produce()
    except KeyboardInterrupt:
        pass  # Ctrl-C ends the endless loop; stop() in `finally` delivered everything
